"""The README's figures, from the commands the README shows beside them: rerun them, compare, rewrite.

    python scripts/readme_figures.py [--only quickstart report sharpness m_sharpness study gpu_smoke] [--write]

Every figure of README.md sits between ``<!-- figure NAME -->`` and ``<!-- /figure -->`` (a number
in a sentence, or a whole table); the part of NAME before the dot is the group of commands that
produces it (:data:`GROUPS`). This script runs each group's commands as the README shows them, from
the repository root, with the run directories in a temporary folder, prints every figure beside the
README's, and with ``--write`` puts the new ones in README.md (and the times in ``make help``). Times
are this machine's: run it on a quiet one. ``make readme-figures`` runs every group with ``--write``
(about 20 minutes on 2 CPU cores); the study's tables are read from ``docs/study/``, which ``make
study`` writes.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
README, MAKEFILE, STUDY = ROOT / "README.md", ROOT / "Makefile", ROOT / "docs" / "study"
FIGURE = re.compile(r"<!-- figure (?P<name>[\w.]+) -->(?P<value>.*?)<!-- /figure -->", re.DOTALL)
#: The ``make help`` lines that quote a figure: target → the figure.
MAKE_HELP = {"demo": "quickstart.seconds", "study": "study.time"}
#: The study's methods, as its README table names them, in its order.
STUDY_METHODS = {"sgd": "SGD", "sam": "SAM", "nso": "NSO", "sgd_tracer": "SGD-TRACER"}


def duration(*seconds: float) -> str:
    """``9 s``, ``11-13 s``, or in minutes from two minutes on: ``4.0 minutes``."""
    minutes = min(seconds) >= 120
    ends = dict.fromkeys(f"{value / 60:.1f}" if minutes else f"{value:.0f}" for value in (min(seconds), max(seconds)))
    return "-".join(ends) + (" minutes" if minutes else " s")


def run(command: list[str]) -> tuple[float, str]:
    """``command`` from the repository root; its wall time in seconds and its standard output."""
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    return time.perf_counter() - started, result.stdout


def train(folder: Path, *overrides: str) -> tuple[float, Path]:
    """``python train.py <overrides>`` (a sweep when they start with ``-m``), its run or sweep
    directory in ``folder``; its wall time and that directory."""
    sweep = overrides[:1] == ("-m",)
    where = f"hydra.{'sweep' if sweep else 'run'}.dir={folder}"
    seconds, _ = run([sys.executable, "train.py", *overrides, where, "trainer.progress_bar=false"])
    return seconds, folder


def summaries(sweep: Path) -> dict[tuple[str, int], dict]:
    """A sweep's ``summary.json`` files by (optimizer, seed)."""
    found = {}
    for path in sweep.glob("*/summary.json"):
        overrides = dict(line.removeprefix("- ").split("=", 1) for line in
                         (path.parent / ".hydra" / "overrides.yaml").read_text().splitlines())
        found[overrides["optimizer"], int(overrides["seed"])] = json.loads(path.read_text())
    return found


def pair(values: dict[tuple[str, int], float], optimizer: str, form: str) -> str:
    """Seeds 0 and 1 of ``optimizer``: ``17.3 and 16.0``."""
    return " and ".join(format(values[optimizer, seed], form) for seed in (0, 1))


def quickstart(folder: Path) -> dict[str, str]:
    """``python train.py`` and ``python train.py optimizer=sam``."""
    seconds, sgd = train(folder / "sgd")
    _, sam = train(folder / "sam", "optimizer=sam")
    sgd_summary, sam_summary = (json.loads((run_dir / "summary.json").read_text()) for run_dir in (sgd, sam))
    return {"quickstart.seconds": duration(seconds),
            "quickstart.best_val": f"{sgd_summary['best_val']['val/accuracy']:.3f}",
            "quickstart.test_best_val": f"{sgd_summary['test']['best_val']['test/accuracy']:.3f}",
            "quickstart.sam_test_last": f"{sam_summary['test']['last']['test/accuracy']:.3f}",
            "quickstart.sam_test_best_val": f"{sam_summary['test']['best_val']['test/accuracy']:.3f}"}


def report(folder: Path) -> dict[str, str]:
    """``python train.py -m optimizer=sgd,sam seed=0,1`` and the report's method × dataset table."""
    seconds, sweep = train(folder, "-m", "optimizer=sgd,sam", "seed=0,1")
    _, text = run([sys.executable, "-m", "flatmin.report", str(sweep)])
    table = re.search(r"^### test accuracy \(%\), best-validation model\n\n((?:\|.*\n)+)", text, re.MULTILINE)
    return {"report.seconds": duration(seconds), "report.table": f"\n```\n{table.group(1)}```\n"}


def sharpness(folder: Path) -> dict[str, str]:
    """``python train.py -m optimizer=sgd,sam seed=0,1 trainer.sharpness=true``."""
    _, sweep = train(folder, "-m", "optimizer=sgd,sam", "seed=0,1", "trainer.sharpness=true")
    measured = {key: summary["sharpness"] for key, summary in summaries(sweep).items()}
    trace = {key: value["trace"] for key, value in measured.items()}
    lambda_max = {key: value["lambda_max"] for key, value in measured.items()}
    return {"sharpness.seconds": duration(statistics.mean(m["time_s"] for m in measured.values())),
            "sharpness.trace": f"{pair(trace, 'sgd', '#.3g')} (SGD, seeds 0 and 1) against "
                               f"{pair(trace, 'sam', '#.3g')}",
            "sharpness.lambda_max": f"{pair(lambda_max, 'sgd', '#.3g')} against {pair(lambda_max, 'sam', '#.3g')}"}


def m_sharpness(folder: Path) -> dict[str, str]:
    """``python train.py -m optimizer=sgd,sam seed=0,1 trainer.sharpness=true trainer.sharpness_m_rho=0.1``."""
    _, sweep = train(folder, "-m", "optimizer=sgd,sam", "seed=0,1", "trainer.sharpness=true",
                     "trainer.sharpness_m_rho=0.1")
    measured = {key: summary["sharpness"] for key, summary in summaries(sweep).items()}
    values = {key: 1e3 * value["m_sharpness"] for key, value in measured.items()}
    return {"m_sharpness.seconds": duration(*(value["time_s"] for value in measured.values())),
            "m_sharpness.values": f"{pair(values, 'sgd', '#.3g')} (×1e-3; SGD, seeds 0 and 1) against "
                                  f"{pair(values, 'sam', '#.3g')} (SAM)"}


def study_tables() -> dict[str, str]:
    """The study's tables as ``make study`` last wrote them to ``docs/study/``."""
    sensing = re.search(r"((?:\|.*\n)+)", (STUDY / "matrix_sensing.md").read_text()).group(1)
    text = (STUDY / "report.md").read_text()
    every = text[text.index("### Every configuration"):]
    header, _, *rows = [[cell.strip() for cell in line.strip("|").split("|")]
                        for line in every.splitlines() if line.startswith("|")]
    columns = ["test/accuracy, final model (%)", "test/accuracy, best-validation model (%)", "λ_max", "Hessian trace"]
    by_method = {row[0].split(" · ")[0]: row for row in rows}
    lines = ["| method | test accuracy (%), final model | test accuracy (%), best-validation model | λ_max | "
             "Hessian trace |", "|---|---|---|---|---|"]
    lines += [f"| {name} | " + " | ".join(re.sub(r" \(n=\d+\)$", "", by_method[method][header.index(column)])
                                         for column in columns) + " |" for method, name in STUDY_METHODS.items()]
    return {"study.matrix_sensing": f"\n{sensing}", "study.digits": "\n" + "\n".join(lines) + "\n"}


def study(folder: Path) -> dict[str, str]:
    """``make study`` (it rewrites ``docs/study/``), and its tables."""
    seconds, _ = run(["make", "study", f"PYTHON={sys.executable}"])
    return {"study.time": duration(seconds), **study_tables()}


def gpu_smoke(folder: Path) -> dict[str, str]:
    """``DEVICE=cpu QUICK=1 scripts/gpu_check.sh <folder>``, the GPU check's CPU smoke mode."""
    seconds, _ = run(["env", "DEVICE=cpu", "QUICK=1", f"PYTHON={sys.executable}", "scripts/gpu_check.sh",
                      str(folder)])
    return {"gpu_smoke.seconds": duration(seconds)}


GROUPS: dict[str, Callable[[Path], dict[str, str]]] = {
    "quickstart": quickstart, "report": report, "sharpness": sharpness, "m_sharpness": m_sharpness,
    "study": study, "gpu_smoke": gpu_smoke}


def readme_figures(text: str) -> dict[str, str]:
    """The README's figures by name."""
    return {match["name"]: match["value"] for match in FIGURE.finditer(text)}


def with_figures(text: str, figures: dict[str, str]) -> str:
    """``text`` with the named figures replaced (the others as they were)."""
    return FIGURE.sub(lambda m: f"<!-- figure {m['name']} -->{figures.get(m['name'], m['value'])}<!-- /figure -->",
                      text)


def with_make_help(text: str, figures: dict[str, str]) -> str:
    """The Makefile with ``make help``'s quoted times replaced by the figures measured."""
    for target, name in MAKE_HELP.items():
        if name in figures:
            text = re.sub(rf"(?m)^({target}: ## .*\(about )[^)]*?( on 2 CPU cores\))", rf"\g<1>{figures[name]}\g<2>",
                          text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=list(GROUPS), default=list(GROUPS))
    parser.add_argument("--write", action="store_true", help="put the new figures in README.md and the Makefile")
    args = parser.parse_args()
    text = README.read_text()
    old, new = readme_figures(text), {}
    with tempfile.TemporaryDirectory() as folder:
        for group in args.only:
            print(f"{group} ...", file=sys.stderr, flush=True)
            new.update(GROUPS[group](Path(folder) / group))
    for name, value in new.items():
        same = "same" if old.get(name) == value else "CHANGED"
        print(f"{name}: README {old.get(name, '(absent)')!r}, measured {value!r}: {same}")
    if args.write:
        README.write_text(with_figures(text, new))
        MAKEFILE.write_text(with_make_help(MAKEFILE.read_text(), new))


if __name__ == "__main__":
    main()
