"""Finding run directories and reading their status, settings and facets."""

from __future__ import annotations

from pathlib import Path

import pytest

from flatmin.report.runs import ReportError, WANDB_NOT_READABLE, find_runs, read_run
from tests.report.conftest import completed, write_run


def test_runs_are_found_recursively_with_their_status(synthetic_runs: Path):
    runs = {run.path.relative_to(synthetic_runs).as_posix(): run for run in find_runs([synthetic_runs])}
    assert len(runs) == 13
    assert runs["digits/2"].status == "failed" and runs["digits/2"].error == "RuntimeError: out of memory"
    assert runs["digits/3"].status == "unfinished" and "no summary.json" in runs["digits/3"].error
    assert runs["sam_sweep/sam_0"].status == "completed" and runs["sam_sweep/sam_0"].error is None


def test_settings_leave_out_seed_paths_and_logging_and_facets_name_the_choices(synthetic_runs: Path):
    run = read_run(synthetic_runs / "sam_sweep" / "sam_1")
    assert run.config["seed"] == 1 and "paths.output_dir" in run.config and "logger.wandb" in run.config
    assert not any(key == "seed" or key.startswith(("paths.", "logger.")) for key in run.settings)
    assert run.settings["optimizer.rho"] == 0.05 and run.settings["model.widths"] == (32, 64, 128)
    facets = run.facets
    assert (facets["experiment"], facets["method"], facets["dataset"], facets["model"]) == \
        ("sam_cifar_wrn28", "sam", "cifar10", "wrn28_10")


def test_facets_without_hydra_choices_come_from_the_config(tmp_path: Path, base_config):
    asam = write_run(tmp_path / "asam", base_config, {"optimizer.name": "sam", "optimizer.adaptive": True}, None,
                     completed(0.9))
    facets = read_run(asam).facets
    assert (facets["experiment"], facets["method"], facets["dataset"], facets["model"]) == \
        (None, "asam", "digits", "SmallCNN")


def test_a_run_dir_is_not_searched_further(tmp_path: Path, base_config):
    run_dir = write_run(tmp_path / "sweep" / "0", base_config, {}, None, completed(0.9))
    (run_dir / "wandb" / "offline-run-1").mkdir(parents=True)
    (run_dir / "wandb" / "offline-run-1" / "summary.json").write_text("{}")
    assert [run.path for run in find_runs([tmp_path])] == [run_dir]


def test_unreadable_files_make_a_run_unfinished_with_the_reason(tmp_path: Path, base_config):
    broken = write_run(tmp_path / "broken", base_config, {}, None, None)
    (broken / "summary.json").write_text('{"status": "compl')
    assert read_run(broken).status == "unfinished"
    assert read_run(broken).error == "summary.json cannot be read (JSONDecodeError)"
    odd = write_run(tmp_path / "odd", base_config, {}, None, {"status": "running"})
    assert read_run(odd).error == "summary.json has status 'running' and no error"


def test_bad_paths_are_one_sentence(tmp_path: Path):
    with pytest.raises(ReportError, match=r"is not a directory; give run or sweep directories\.$"):
        find_runs([tmp_path / "nowhere"])
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(ReportError, match=r"^No flatmin run directory under .*empty \(a run directory has"):
        find_runs([tmp_path / "empty"])
    offline = tmp_path / "wandb" / "offline-run-20250101_000000-abc123"
    offline.mkdir(parents=True)
    (offline / "run-abc123.wandb").write_bytes(b"\x00\x01binary")
    with pytest.raises(ReportError) as caught:
        find_runs([tmp_path / "wandb"])
    assert str(caught.value).endswith(WANDB_NOT_READABLE)
