"""The end-of-training hook (``trainer.sharpness=true``) and ``python -m flatmin.sharpness``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flatmin.sharpness.__main__ import main
from flatmin.train import run
from tests.conftest import ROOT, make_config

SHARPNESS = ("trainer.sharpness=true", "trainer.sharpness_samples=100", "trainer.sharpness_top_k=2",
             "trainer.sharpness_max_iter=8", "trainer.sharpness_tol=0")  # tol 0: the same work every time


@pytest.fixture(scope="module")
def measured_run(tmp_path_factory) -> Path:
    """A one-epoch digits run that measured its final model."""
    cfg = make_config(tmp_path_factory.mktemp("run"), "trainer.epochs=1", "trainer.limit_train_batches=3",
                      *SHARPNESS)
    run(cfg)
    return Path(cfg.paths.output_dir)


def test_the_hook_writes_the_measurement_into_the_summary(measured_run: Path):
    summary = json.loads((measured_run / "summary.json").read_text())
    assert summary["status"] == "completed"
    sharpness = summary["sharpness"]
    assert (sharpness["samples"], sharpness["batches"], sharpness["batch_size"]) == (100, 2, 64)
    assert (sharpness["params"], sharpness["aggregate"], sharpness["top_k"]) == ("all", "batch_mean", 2)
    assert sharpness["lambda_max"] == sharpness["eigenvalues"][0] >= sharpness["eigenvalues"][1]
    assert sharpness["trace"] > sharpness["lambda_max"] > 0


def test_the_command_line_remeasures_the_checkpoint(measured_run: Path, tmp_path: Path):
    out = tmp_path / "sharpness.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # as the in-process hook ran (conftest.one_thread)
    result = subprocess.run([sys.executable, "-m", "flatmin.sharpness", str(measured_run), "--json", str(out)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "Hessian trace (Hutchinson" in result.stdout and "top-2 eigenvalues" in result.stdout
    remeasured = json.loads(out.read_text())
    hooked = json.loads((measured_run / "summary.json").read_text())["sharpness"]
    assert remeasured["checkpoint"] == str(measured_run / "last.pt")  # the final model, as the hook measured
    assert remeasured["trace"] == pytest.approx(hooked["trace"], rel=1e-4)
    assert remeasured["eigenvalues"] == pytest.approx(hooked["eigenvalues"], rel=1e-4)


def test_options_and_checkpoint_files_on_the_command_line(measured_run: Path, capsys):
    assert main([str(measured_run / "best.pt"), "--top-k", "1", "--samples", "32", "--params", "conv_and_head",
                 "--m-rho", "0.05", "--m", "50", "--m-samples", "100", "--m-steps", "3"]) == 0
    printed = capsys.readouterr().out
    assert "best.pt" in printed and "top-1 eigenvalues" in printed
    assert "adaptive m-sharpness (rho 0.05, m 50, n 100, 3 ascent steps): " in printed
    assert "32 training examples (seed 0) in 1 batches" in printed and "parameters: conv_and_head" in printed


def corrupt_copy(run_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "corrupt"
    copy.mkdir()
    (copy / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    (copy / "last.pt").write_bytes((run_dir / "last.pt").read_bytes()[:1000])
    return copy


@pytest.mark.parametrize(("arguments", "sentence"), [
    (lambda run_dir, tmp: [str(tmp / "nowhere")], "No run directory or checkpoint at"),
    (lambda run_dir, tmp: [str(corrupt_copy(run_dir, tmp))], "cannot be read ("),
    (lambda run_dir, tmp: [str(run_dir), "--top-k", "0"],
     "trainer.sharpness_top_k must be a positive integer (got 0)."),
    (lambda run_dir, tmp: [str(run_dir), "--aggregate", "max"],
     "trainer.sharpness_aggregate must be one of batch_mean, subset (got 'max')."),
    (lambda run_dir, tmp: [str(run_dir), "--params", "nothing"], "selects no trainable parameter of SmallCNN"),
    (lambda run_dir, tmp: [str(run_dir), "--m-norm", "linf"],
     "trainer.sharpness_m_norm must be one of adaptive, l2 (got 'linf')."),
], ids=["missing", "corrupt", "top-k", "aggregate", "params", "m-norm"])
def test_bad_input_is_one_sentence_and_exit_status_2(measured_run: Path, tmp_path: Path, capsys, arguments, sentence):
    assert main(arguments(measured_run, tmp_path)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flatmin.sharpness: error: ") and sentence in lines[0]


def test_a_failed_measurement_keeps_the_runs_results(tmp_path: Path, monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(sys.modules["flatmin.train.run"], "measure_run", out_of_memory)  # not run()
    summary = run(make_config(tmp_path, "trainer.epochs=1", "trainer.limit_train_batches=2", "trainer.sharpness=true"))
    written = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == written["status"] == "completed" and "test" in written
    assert written["sharpness"] == {"error": "RuntimeError: CUDA out of memory"}


def test_an_empty_selection_fails_before_training(tmp_path: Path):
    from flatmin.errors import ConfigError

    cfg = make_config(tmp_path, "trainer.sharpness=true", "trainer.sharpness_params=nothing")
    with pytest.raises(ConfigError, match="selects no trainable parameter"):
        run(cfg)
    assert not (tmp_path / "last.pt").exists()
