"""The analysis measures from a run's config and the command line: files and keys, the
ESD and the 1-D landscape equal to the API on the fixed subset, progress and closing lines, refusals,
and the report's columns."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from flatmin.assembly import assemble
from flatmin.errors import ConfigError
from flatmin.report.runs import find_runs
from flatmin.report.tables import build_sections
from flatmin.runtime import Runtime
from flatmin.sharpness import loss_surface, parse_grid, random_direction, spectral_density, subset_hessian
from flatmin.sharpness import progress as progress_module
from flatmin.sharpness.__main__ import main
from flatmin.sharpness.checkpoints import load_run
from flatmin.sharpness.measure import fixed_subset_batches, measurement_mode
from flatmin.train import run
from flatmin.train.run import headline
from flatmin.validation import validate
from tests.conftest import make_config

QUICK = ("trainer.epochs=1", "trainer.limit_train_batches=3", "trainer.sharpness=true",
         "trainer.sharpness_samples=100", "trainer.sharpness_max_iter=3", "trainer.sharpness_esd_iterations=8",
         "trainer.sharpness_m_samples=128", "trainer.sharpness_m=64", "trainer.sharpness_worst_steps=3",
         "trainer.sharpness_average_draws=3", "trainer.sharpness_landscape_x=-1:1:5",
         "trainer.sharpness_landscape_y=-1:1:3")
COMMAND = ["--samples", "100", "--esd-iterations", "8", "--landscape-x=-1:1:5", "--landscape-y=-1:1:3",
           "--interpolate-alpha=-0.5:1.5:5"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """Two one-epoch digits runs: one measured every measure but interpolation at its end, the other
    only average sharpness (no trace)."""
    root = tmp_path_factory.mktemp("runs")
    every = make_config(root / "every", *QUICK,
                        "trainer.sharpness_measures=[hessian,esd,worst_case,average,landscape1d,landscape2d]")
    average = make_config(root / "average", *QUICK, "seed=1", "trainer.sharpness_measures=average")
    run(every)
    run(average)
    return root / "every", root / "average"


def test_a_run_measures_what_it_is_asked_into_its_summary_and_files(runs):
    every, average = runs
    summary = json.loads((every / "summary.json").read_text())
    sharpness = summary["sharpness"]
    assert sharpness["measures"] == ["hessian", "esd", "worst_case", "average", "landscape1d", "landscape2d"]
    assert {"trace", "lambda_max", "samples", "batches"} <= set(sharpness) and len(sharpness["eigenvalues"]) == 1
    assert {"file", "plot", "lambda_min", "lambda_max", "negative_mass"} <= set(sharpness["esd"])
    assert sharpness["esd"]["lambda_min"] <= sharpness["esd"]["lambda_max"]
    assert 0 <= sharpness["esd"]["negative_mass"] <= 1
    assert {"sharpness", "error_increase", "delta_norm"} <= set(sharpness["worst_case"])
    assert (sharpness["worst_case"]["rho"], sharpness["worst_case"]["norm"], sharpness["worst_case"]["steps"]) \
        == (0.1, "linf", 3)
    assert (sharpness["average"]["norm"], sharpness["average"]["draws"]) == ("l2", 3)
    for name in ("esd", "landscape1d", "landscape2d"):
        assert Path(sharpness[name]["file"]) == every / "sharpness" / f"{name}.json"
        assert Path(sharpness[name]["plot"]).read_bytes().startswith(b"\x89PNG")
    surface = json.loads((every / "sharpness" / "landscape2d.json").read_text())
    assert (len(surface["x"]), len(surface["y"])) == (5, 3)
    assert [len(row) for row in surface["loss"]] == [5, 5, 5] and len(surface["accuracy"]) == 3
    assert sharpness["landscape2d"]["loss_min"] == min(min(row) for row in surface["loss"])
    esd = json.loads((every / "sharpness" / "esd.json").read_text())
    assert {"nodes", "weights", "grid", "density", "iterations", "vectors"} <= set(esd)
    assert (len(esd["nodes"]), len(esd["nodes"][0]), esd["iterations"]) == (1, 8, 8)
    line = headline(summary, every)
    assert f"trace {sharpness['trace']:.4g}" in line and f"worst-case {sharpness['worst_case']['sharpness']:.4g}" \
        in line and f"average {sharpness['average']['sharpness']:.4g}" in line
    only = json.loads((average / "summary.json").read_text())["sharpness"]
    assert "trace" not in only and "average" in only and not (average / "sharpness").exists()


def test_the_command_equals_the_api_and_says_what_it_does(runs, tmp_path: Path, capsys, caplog, monkeypatch):
    every, _ = runs
    monkeypatch.setattr(progress_module, "LOG_EVERY_S", 0.0)
    caplog.set_level(logging.INFO, logger="flatmin.sharpness")
    out = tmp_path / "out"
    assert main([str(every), "--measures", "esd,landscape1d", *COMMAND, "--out", str(out), "--json",
                 str(tmp_path / "result.json")]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    result = json.loads((tmp_path / "result.json").read_text())
    assert printed[-1] == (f"flatmin.sharpness: ESD λ {result['esd']['lambda_min']:.4g} … "
                           f"{result['esd']['lambda_max']:.4g} (negative mass {result['esd']['negative_mass']:.3g}), "
                           f"landscape1d loss {result['landscape1d']['loss_min']:.4g} … "
                           f"{result['landscape1d']['loss_max']:.4g}")
    assert any(line.startswith("  esd (iterations 8, vectors 1): ESD λ") for line in printed)
    logged = [record.getMessage() for record in caplog.records]
    assert logged[0].startswith("sharpness: measuring esd, landscape1d of SmallCNN on 100 training examples (seed 0)")
    assert "esd: 8/8 Hessian-vector products" in logged and "landscape1d: 5/5 points" in logged
    assert "trace" not in result and sorted(path.name for path in out.iterdir()) == [
        "esd.json", "esd.png", "landscape1d.json", "landscape1d.png"]

    cfg, _, state = load_run(every)
    parts = assemble(cfg, Runtime.local("cpu", precision="fp32"))
    model = parts.module
    model.load_state_dict(state["model"])
    batches = fixed_subset_batches(parts.splits.train, 100, cfg.dataset.batch_size, 0, parts.splits.collate)
    params = [p for p in model.parameters() if p.requires_grad]
    loss_fn = torch.nn.functional.cross_entropy
    with measurement_mode(model):
        nodes, weights = spectral_density(subset_hessian(model, loss_fn, batches, params, torch.device("cpu")), params,
                                          8, 1, torch.Generator().manual_seed(0))
    esd = json.loads((out / "esd.json").read_text())
    scale = nodes.abs().max().item()
    assert torch.tensor(esd["nodes"], dtype=torch.float64) == pytest.approx(nodes, abs=1e-4 * scale)
    assert torch.tensor(esd["weights"], dtype=torch.float64) == pytest.approx(weights, abs=1e-4)
    direction = random_direction(model, torch.Generator().manual_seed(0))
    line = loss_surface(model, loss_fn, batches, [direction], parse_grid("-1:1:5"))
    landscape = json.loads((out / "landscape1d.json").read_text())
    assert landscape["loss"] == pytest.approx(line["loss"].tolist(), rel=1e-4)
    assert landscape["accuracy"] == pytest.approx(line["accuracy"].tolist(), abs=1e-4)


def test_interpolation_to_another_run(runs, tmp_path: Path, capsys):
    every, average = runs
    assert main([str(every), "--measures", "interpolation", "--interpolate-to", str(average), *COMMAND, "--out",
                 str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == \
        f"flatmin.sharpness: interpolation to {average / 'last.pt'}"
    curve = json.loads((tmp_path / "interpolation.json").read_text())
    assert curve["alpha"] == [-0.5, 0.0, 0.5, 1.0, 1.5] and curve["to"] == str(average / "last.pt")
    assert len(curve["loss"]) == len(curve["accuracy"]) == 5 and (tmp_path / "interpolation.png").is_file()


def foreign_checkpoint(tmp: Path) -> Path:
    torch.save({"model": {"weight": torch.zeros(3)}}, tmp / "foreign.pt")
    return tmp / "foreign.pt"


@pytest.mark.parametrize(("arguments", "sentence"), [
    (lambda tmp: ["--measures", "esd,nosuch"],
     "trainer.sharpness_measures must be a comma-separated list of hessian, esd, worst_case, average, landscape1d, "
     "landscape2d, interpolation (got 'esd,nosuch')."),
    (lambda tmp: ["--measures", "esd,average,esd"], "must name each measure at most once"),
    (lambda tmp: ["--measures", "interpolation"], "trainer.sharpness_interpolate_to must be the run directory"),
    (lambda tmp: ["--measures", "interpolation", "--interpolate-to", str(tmp / "nowhere")],
     "No run directory or checkpoint at {tmp}/nowhere"),
    (lambda tmp: ["--measures", "interpolation", "--interpolate-to", str(foreign_checkpoint(tmp))],
     "holds another model than this run's SmallCNN"),
    (lambda tmp: ["--measures", "esd", "--esd-iterations", "0"],
     "trainer.sharpness_esd_iterations must be a positive integer (got 0)."),
    (lambda tmp: ["--measures", "esd", "--esd-iterations", "1000000"],
     "trainer.sharpness_esd_iterations must be at most the number of entries of the selected parameters"),
    (lambda tmp: ["--measures", "worst_case", "--worst-rho", "abc"],
     "trainer.sharpness_worst_rho must be a number >= 0 (got 'abc')."),
    (lambda tmp: ["--measures", "average", "--average-rho=-1"],
     "trainer.sharpness_average_rho must be a number >= 0 (got -1)."),
    (lambda tmp: ["--measures", "worst_case", "--worst-norm", "l3"],
     "trainer.sharpness_worst_norm must be one of linf, l2 (got 'l3')."),
    (lambda tmp: ["--measures", "average", "--average-draws", "0"], "trainer.sharpness_average_draws must be"),
    (lambda tmp: ["--measures", "landscape1d", "--landscape-x=1:2"],
     "trainer.sharpness_landscape_x must be a grid min:max:num"),
    (lambda tmp: ["--measures", "landscape1d", "--landscape-x=-1:1:0"], "(got '-1:1:0')."),
    (lambda tmp: ["--measures", "landscape1d", "--landscape-norm", "nope"],
     "trainer.sharpness_landscape_norm must be one of filter, layer, weight, dfilter, dlayer, none (got 'nope')."),
    (lambda tmp: ["--measures", "landscape2d", "--landscape-kind", "buffers"], "trainer.sharpness_landscape_kind"),
], ids=["unknown", "repeated", "no-target", "missing-target", "other-model", "esd-zero", "esd-above", "rho-text",
        "rho-negative", "norm", "draws", "grid", "grid-num", "landscape-norm", "kind"])
def test_bad_input_is_one_sentence_and_exit_status_2_before_measuring(runs, tmp_path: Path, capsys, arguments,
                                                                        sentence):
    every, _ = runs
    assert main([str(every), *arguments(tmp_path), "--out", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flatmin.sharpness: error: ")
    assert sentence.replace("{tmp}", str(tmp_path)) in lines[0]
    assert not (tmp_path / "out").exists()


def test_a_bad_measure_in_a_run_config_fails_before_training(tmp_path: Path):
    with pytest.raises(ConfigError, match="trainer.sharpness_measures must be a comma-separated list"):
        validate(make_config(tmp_path, "trainer.sharpness_measures=[esd,nosuch]"))
    with pytest.raises(ConfigError, match="No run directory or checkpoint at"):
        run(make_config(tmp_path, "trainer.sharpness=true", "trainer.sharpness_measures=interpolation",
                        f"trainer.sharpness_interpolate_to={tmp_path / 'nowhere'}"))
    assert not (tmp_path / "last.pt").exists()


def test_the_report_shows_worst_case_and_average_sharpness(runs):
    every, average = runs
    (section,) = build_sections(find_runs([every.parent]))
    detail = section.tables[-1]
    assert {"Hessian trace", "worst-case sharpness", "average sharpness"} <= set(detail.columns)
    cells = {row: {column: entry.ours.mean for (r, column), entry in detail.entries.items() if r == row}
             for row in detail.rows}
    measured = [json.loads((path / "summary.json").read_text())["sharpness"]["average"]["sharpness"] for path in runs]
    assert sorted(values["average sharpness"] for values in cells.values()) == pytest.approx(sorted(measured))
    assert sorted("Hessian trace" in values for values in cells.values()) == [False, True]  # one run has no trace
