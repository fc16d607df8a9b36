"""End to end through the real command line and the real run entry: accuracy, sweeps, W&B, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from flatmin.optim import build_optimizer
from flatmin.optim.registry import options
from flatmin.train import Trainer, run
from flatmin.rundir import load_checkpoint
from tests.conftest import run_cli


def only_run_dir(log_dir: Path) -> Path:
    (run_dir,) = (log_dir / "runs").iterdir()
    return run_dir


def epoch_records(run_dir: Path) -> list[dict]:
    """The ``"event": "epoch"`` lines of a run's metrics.jsonl."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [record for record in records if record["event"] == "epoch"]


#: Every config option of the optimizer group: ``python train.py optimizer=<each>`` must reach the bar.
OPTIONS = sorted(options())


@pytest.fixture(scope="module")
def quick_starts(tmp_path_factory) -> dict[str, Path]:
    """``python train.py -m optimizer=<every option>`` with the default trainer (one real Hydra
    multirun, so the interpreter starts once), and Lookahead over SAM: the run directory of each."""
    log_dir = tmp_path_factory.mktemp("quick_starts")
    run_cli("-m", f"optimizer={','.join(OPTIONS)}", f"hydra.sweep.dir={log_dir / 'sweep'}", log_dir=log_dir,
            timeout=1200)
    run_dirs = {OmegaConf.load(path).optimizer.name: path.parent for path in (log_dir / "sweep").glob("*/config.yaml")}
    run_cli("optimizer=sam", "optimizer.lookahead.enabled=true", f"hydra.run.dir={log_dir / 'lookahead-sam'}",
            log_dir=log_dir)
    return {**run_dirs, "lookahead-sam": log_dir / "lookahead-sam"}


@pytest.mark.parametrize("option", [*OPTIONS, "lookahead-sam"])
def test_quick_start_reaches_the_accuracy_bar(quick_starts: dict[str, Path], option: str):
    run_dir = quick_starts[option]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["test"]["best_val"]["test/accuracy"] >= 0.90
    assert summary["test"]["last"]["test/accuracy"] >= 0.90
    settings = OmegaConf.load(run_dir / "config.yaml").optimizer
    optimizer = build_optimizer(settings, torch.nn.Linear(1, 1))
    mean = getattr(optimizer, "mean_passes_per_step", 1)
    # A count that varies periodically (LookSAM: 2 every k-th step, else 1; FisherMaskSAM: 2 + num_samples every
    # mask_every-th step, else 2) starts on its long step, so a run of S steps averages above the mean by at most
    # (that step's count − the mean)/S.
    first = getattr(optimizer, "passes_per_step", 1)
    varies = mean != first
    assert abs(summary["passes_per_step"] - mean) <= ((first - mean) / summary["global_steps"] + 1e-12 if varies else 0)
    assert summary["epochs"] == 30 and summary["wall_time_s"] > 0
    for name in ("config.yaml", "metrics.jsonl", "last.pt", "best.pt"):
        assert (run_dir / name).is_file(), name
    epochs = epoch_records(run_dir)
    assert [r["epoch"] for r in epochs] == list(range(1, 31))
    assert summary["best_val"]["val/accuracy"] == max(r["val/accuracy"] for r in epochs)


def test_multirun_makes_one_run_dir_and_one_offline_wandb_run_per_job(tmp_path: Path):
    run_cli("-m", "optimizer=sgd,sam", "seed=0,1", "logger=wandb", "trainer.epochs=1", log_dir=tmp_path)
    (sweep,) = (tmp_path / "multiruns").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    run_ids = set()
    for job in jobs:
        summary = json.loads((job / "summary.json").read_text())
        assert summary["status"] == "completed"
        (offline,) = (job / "wandb").glob("offline-run-*")
        run_id = offline.name.rsplit("-", 1)[1]
        run_ids.add(run_id)
        data = (offline / f"run-{run_id}.wandb").read_bytes()
        assert bytes([len(sweep.name)]) + sweep.name.encode() in data        # grouped by the sweep
        assert f"finishing run flatmin/{run_id}" in (offline / "logs" / "debug.log").read_text()
    assert len(run_ids) == 4
    assert {json.loads((job / "summary.json").read_text())["choices"]["optimizer"] for job in jobs} == {"sgd", "sam"}


class Interrupt(Exception):
    pass


RESUMABLE = {
    "sgd-step-lr-per-epoch": ("optimizer=sgd", "scheduler=step", "scheduler.milestones=[0.5]", "scheduler.gamma=0.2",
                              "scheduler.interval=epoch"),
    "sam-released-smoothing": ("optimizer=sam", "trainer.label_smoothing=0.1", "trainer.label_smoothing_form=released"),
    "asam": ("optimizer=asam",),
    "gam": ("optimizer=gam",),
    "nso-sigma-per-epoch-clean-pass": ("optimizer=nso", "optimizer.sigma=0.05", "optimizer.schedules.sigma=linear",
                                       "optimizer.schedule_interval=epoch", "optimizer.clean_pass=always"),
    "sgd_tracer": ("optimizer=sgd_tracer",),
    "adam_tracer": ("optimizer=adam_tracer",),
    "looksam": ("optimizer=looksam", "optimizer.k=3"),
    "msam": ("optimizer=msam",),
    "gnp": ("optimizer=gnp", "optimizer.normalize_clean=true"),
    "fd_gr": ("optimizer=fd_gr",),
    "friendly_sam": ("optimizer=friendly_sam",),
    "vasso": ("optimizer=vasso",),
    "lookahead-sam": ("optimizer=sam", "optimizer.lookahead.enabled=true", "optimizer.lookahead.k=3"),
    "bsam": ("optimizer=bsam",),
    "rapp": ("optimizer=rapp", "optimizer.lookahead.k=3"),
    "sgd-test-every-epoch": ("optimizer=sgd", "trainer.test_every_epoch=true", "model.dropout=0.2"),
    "gsam-rho-schedule": ("optimizer=gsam", "optimizer.schedules.rho=proportional_to_lr", "optimizer.rho_min=0.5",
                          "scheduler.min_lr_factor=0.1"),
    "wsam": ("optimizer=wsam",),
    "fisher_mask_sam": ("optimizer=fisher_mask_sam", "optimizer.mask_every=3"),   # mask steps 9 and 12 after resume
    "bsam-split": ("optimizer=bsam", "optimizer.batch_split=2"),
}


@pytest.mark.parametrize("optimizer", list(RESUMABLE))
def test_resume_after_an_interruption_continues_bit_for_bit(cfg_factory, monkeypatch, optimizer: str):
    # 7 steps an epoch: Lookahead (k=3) syncs across the interruption, NSO's sigma grows over it (at
    # the epoch boundary where the interruption falls), the step schedule decays there.
    overrides = (*RESUMABLE[optimizer], "trainer.epochs=2", "trainer.limit_train_batches=7")
    straight_cfg = cfg_factory(*overrides)
    run(straight_cfg)

    interrupted_cfg = cfg_factory(*overrides)
    real_train_epoch = Trainer.train_epoch

    def train_epoch_then_die(self, epoch):
        if epoch == 1:
            raise Interrupt("killed during epoch 2")
        return real_train_epoch(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", train_epoch_then_die)
    with pytest.raises(Interrupt):
        run(interrupted_cfg)
    monkeypatch.setattr(Trainer, "train_epoch", real_train_epoch)
    run_dir = Path(interrupted_cfg.paths.output_dir)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 1

    interrupted_cfg.trainer.resume = "auto"
    resumed_summary = run(interrupted_cfg)
    straight = load_checkpoint(Path(straight_cfg.paths.output_dir) / "last.pt")
    resumed = load_checkpoint(run_dir / "last.pt")
    for key, tensor in straight["model"].items():
        assert torch.equal(tensor, resumed["model"][key]), key
    assert _same_state(straight["optimizer"], resumed["optimizer"])
    assert resumed_summary["epochs"] == 2

    def metric_lines(path: Path):
        records = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if "time" not in k and "per_s" not in k} for r in records]

    assert metric_lines(run_dir) == metric_lines(Path(straight_cfg.paths.output_dir))


def _same_state(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b))
    return a == b


def test_resuming_a_run_by_path_continues_in_its_own_directory_with_more_epochs(cfg_factory):
    first = cfg_factory("trainer.epochs=1")
    run(first)
    second = cfg_factory("trainer.epochs=2", f"trainer.resume={first.paths.output_dir}")
    summary = run(second)
    assert summary["epochs"] == 2
    assert summary["resumes"] == [{"epoch": 1, "step": 16, "batch_in_epoch": 0,
                                   "changes": {"trainer.epochs": [1, 2]}}]
    assert [r["epoch"] for r in epoch_records(Path(first.paths.output_dir))] == [1, 2]
    assert not Path(second.paths.output_dir).exists()           # the new directory Hydra would give is unused


def test_test_every_epoch_records_the_best_epoch_on_test(cfg_factory):
    # Dropout draws from torch's generator, which iterating the test loader would advance.
    overrides = ("trainer.epochs=3", "trainer.limit_train_batches=3", "model.dropout=0.2")
    cfg = cfg_factory(*overrides, "trainer.test_every_epoch=true")
    summary = run(cfg)
    epochs = epoch_records(Path(cfg.paths.output_dir))
    assert len(epochs) == 3 and all("test/accuracy" in record for record in epochs)
    best = max(epochs, key=lambda record: record["test/accuracy"])
    assert summary["best_test_over_epochs"] == {"epoch": best["epoch"], "test/loss": best["test/loss"],
                                                "test/accuracy": best["test/accuracy"]}

    plain_cfg = cfg_factory(*overrides)
    assert "best_test_over_epochs" not in run(plain_cfg)
    plain_epochs = epoch_records(Path(plain_cfg.paths.output_dir))
    assert not any(key.startswith("test/") for record in plain_epochs for key in record)

    def trained(record: dict) -> dict:
        """What the training decides: the record without its timings and test metrics."""
        return {key: value for key, value in record.items() if "time" not in key and not key.startswith("test/")}

    assert [trained(record) for record in epochs] == [trained(record) for record in plain_epochs]

    cfg.trainer.resume = "auto"  # a finished run resumed: the best test epoch comes back from last.pt
    assert run(cfg)["best_test_over_epochs"] == summary["best_test_over_epochs"]


@pytest.mark.parametrize(("optimizer", "epochs"), [("sgd", 12), ("sam", 6), ("gam", 3), ("nso", 4), ("looksam", 10),
                                                   ("msam", 12)])
def test_a_pass_budget_gives_each_method_equal_compute(cfg_factory, optimizer: str, epochs: int):
    """12 passes: SGD and MSAM 1 per step, SAM 2, NSO 3 (k = 1 two-sided and the clean pass), GAM 4,
    LookSAM 6/5 on average (k = 5 by default: a SAM step, then four reusing steps)."""
    cfg = cfg_factory(f"optimizer={optimizer}", "trainer.budget_passes=12", "trainer.limit_train_batches=1")
    summary = run(cfg)
    assert summary["epochs"] == epochs
    assert summary["global_steps"] * summary["passes_per_step"] == pytest.approx(12)
    written = (Path(cfg.paths.output_dir) / "config.yaml").read_text()
    assert f"epochs: {epochs}\n" in written
