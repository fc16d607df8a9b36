"""Markdown, LaTeX and CSV: the numbers as laid out, and output that parses."""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path

import pytest
from pylatexenc.latexwalker import LatexEnvironmentNode, LatexWalker

from flatmin.report.render import CSV_FIELDS, csv_cells, latex, latex_escape, markdown, not_included_csv
from flatmin.report.runs import find_runs
from flatmin.report.tables import build_sections

BASIC = "WRN-28-10 (200 epochs) · basic"
T_975_DF2 = 4.302652729749464


@pytest.fixture(scope="module")
def report(synthetic_runs: Path):
    runs = find_runs([synthetic_runs])
    return build_sections(runs), runs, [str(synthetic_runs)]


def test_markdown_shows_the_numbers_in_the_papers_layout(report):
    text = markdown(*report)
    assert "13 run directories under" in text and "11 completed, 1 failed, 0 diverged, 0 interrupted, 1 unfinished." in text
    header = "|  | C10 SAM | paper | Δ | C10 SGD | paper | Δ | C100 SAM | paper | Δ | C100 SGD | paper | Δ |"
    assert header in text
    assert f"| {BASIC} · optimizer.rho=0.05 | 3.00 ± 0.20 [2.50, 3.50] (n=3) | 2.70 | +0.30 |" in text
    assert f"| {BASIC} |  | 2.70 |  | 3.40 ± 0.14 [2.13, 4.67] (n=2) | 3.50 | -0.10 |  | 16.50 |" in text
    assert "| WRN-28-10 (200 epochs) · cutout |  | 2.30 |  |  | 2.60 |  | 15.00 (n=1) | 14.90 | +0.10 |" in text
    rows = [line.split(" | ")[0][2:] for line in text.splitlines() if line.startswith(("| WRN", "| Pyramid"))]
    assert rows == [BASIC, f"{BASIC} · optimizer.rho=0.05", f"{BASIC} · optimizer.rho=0.1",
                    "WRN-28-10 (200 epochs) · cutout", "WRN-28-10 (200 epochs) · AutoAugment",
                    "PyramidNet · basic", "PyramidNet+ShakeDrop · basic"]
    assert "- Published: mean of 5 runs" in text
    assert "| sgd · digits · small_cnn | 95.00 ± 1.41 [82.29, 107.71] (n=2) |" not in text  # best-val model differs
    assert "| sgd | 96.00 ± 1.41 [83.29, 100.00] (n=2) |" in text
    assert ("| 5.5 ± 0.7071 [-0.8531, 11.85] (n=2) | 0.15 ± 0.07071 [-0.4853, 0.7853] (n=2) "
            "| 105 ± 7.071 [41.47, 168.5] (n=2) |") in text


def test_markdown_lists_the_runs_not_included(report, synthetic_runs: Path):
    text = markdown(*report)
    section = text[text.index("## Runs not included"):]
    assert f"| {synthetic_runs / 'digits' / '2'} | failed | RuntimeError: out of memory |" in section
    assert f"| {synthetic_runs / 'digits' / '3'} | unfinished | no summary.json: still running" in section


def test_latex_parses_and_every_row_fills_its_columns(report):
    text = latex(*report)
    nodes, _, _ = LatexWalker(text, tolerant_parsing=False).get_latex_nodes()  # raises on unbalanced input
    tabulars = [node for node in _environments(nodes) if node.environmentname == "tabular"]
    assert len(tabulars) == 6  # SAM, outside, detail; generic, detail; runs not included
    for tabular in tabulars:
        spec = tabular.nodeargd.argnlist[-1].latex_verbatim()
        columns = len(re.sub(r"\{[^{}]*\}", "", spec.strip()[1:-1]))  # one letter per column: l, c, p{width}
        body = tabular.latex_verbatim().split(r"\midrule")[1].split(r"\bottomrule")[0]
        for row in filter(None, (line.strip() for line in body.split(r"\\"))):
            assert row.replace(r"\&", "").count("&") == columns - 1, row
    assert r"3.00 $\pm$ 0.20 {[}2.50, 3.50{]} (n=3) & 2.70 & +0.30" in text
    assert r"RuntimeError: out of memory" in text


def test_latex_escaping():
    assert latex_escape("50% of a_b & {c} #1 ~ ^") == r"50\% of a\_b \& \{c\} \#1 \textasciitilde{} \textasciicircum{}"
    assert latex_escape("λ1 (×10³) ± Δ") == r"$\lambda$1 ($\times$10$^3$) $\pm$ $\Delta$"


def test_csv_parses_into_the_numbers(report):
    rows = list(csv.DictReader(io.StringIO(csv_cells(report[0]))))
    assert tuple(rows[0]) == CSV_FIELDS
    sam = next(row for row in rows if row["row"] == f"{BASIC} · optimizer.rho=0.05" and row["column"] == "C10 SAM")
    assert (sam["experiment"], sam["metric"], sam["n"]) == ("sam_cifar_wrn28", "test error (%), final model", "3")
    assert float(sam["mean"]) == pytest.approx(3.0) and float(sam["std"]) == pytest.approx(0.2)
    assert float(sam["ci95_low"]) == pytest.approx(3.0 - T_975_DF2 * 0.2 / math.sqrt(3))
    assert float(sam["published"]) == 2.7 and float(sam["difference"]) == pytest.approx(0.3)
    not_run = next(row for row in rows if row["row"] == "PyramidNet · basic" and row["column"] == "C100 SGD")
    assert (not_run["n"], not_run["mean"], not_run["published"], not_run["difference"]) == ("0", "", "19.7", "")
    excluded = list(csv.DictReader(io.StringIO(not_included_csv(report[1]))))
    assert [(row["status"], row["error"]) for row in excluded] == [("failed", "RuntimeError: out of memory"),
                                                                   ("unfinished", excluded[1]["error"])]


def _environments(nodes):
    for node in nodes or ():
        if isinstance(node, LatexEnvironmentNode):
            yield node
            yield from _environments(node.nodelist)
