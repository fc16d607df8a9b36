"""End to end through the real command line and the real run entry: accuracy, sweeps, W&B, resume."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch.optim.swa_utils import update_bn

from flatmin.data import build_dataset, make_loaders
from flatmin.models import build_model
from flatmin.optim import METHODS, build_optimizer
from flatmin.optim.registry import options, proximal_lookahead
from flatmin.rundir import load_checkpoint
from flatmin.step import Stepper
from flatmin.train import Trainer, run
from tests.conftest import finish_cli, run_cli, start_cli


def only_run_dir(log_dir: Path) -> Path:
    (run_dir,) = (log_dir / "runs").iterdir()
    return run_dir


def epoch_records(run_dir: Path) -> list[dict]:
    """The ``"event": "epoch"`` lines of a run's metrics.jsonl."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [record for record in records if record["event"] == "epoch"]


#: Every config option of the optimizer group: ``python train.py optimizer=<each>`` must reach the bar.
OPTIONS = sorted(options())


#: SWA over SGD in epoch units: averaged once per epoch after epoch 20, the LR annealed to swa_lr.
SWA_EPOCHS = ("optimizer=sgd", "optimizer.averaging.kind=swa", "optimizer.averaging.interval=epoch",
              "optimizer.averaging.start=20", "optimizer.averaging.every=1", "optimizer.averaging.swa_lr=0.05",
              "optimizer.averaging.anneal_epochs=5")
EMA_OVER_SAM = ("optimizer=sam", "optimizer.averaging.kind=ema", "optimizer.averaging.decay=0.95")

#: Quick starts of settings that are not options of their own: Lookahead over SAM, and the weight averages
#: (bSAM's batch_split=2 reaches 0.98 too, run by hand: the suite's time on two cores is spent).
VARIANTS = {"lookahead-sam": ("optimizer=sam", "optimizer.lookahead.enabled=true"),
            "sam-ema": EMA_OVER_SAM, "sgd-swa": SWA_EPOCHS}


def halves_of_equal_cost(names: list[str]) -> tuple[list[str], list[str]]:
    """The options split in two of about equal work, by their passes per step (greedy, costliest first)."""
    def passes(name: str) -> float:
        optimizer = build_optimizer(name, torch.nn.Linear(1, 1))
        return getattr(optimizer, "mean_passes_per_step", 1)

    cost = {name: passes(name) for name in names}
    halves: tuple[list[str], list[str]] = ([], [])
    load = [0.0, 0.0]
    for name in sorted(names, key=cost.get, reverse=True):
        lighter = load.index(min(load))
        halves[lighter].append(name)
        load[lighter] += cost[name]
    return halves


@pytest.fixture(scope="module")
def quick_starts(tmp_path_factory) -> dict[str, Path]:
    """``python train.py -m optimizer=<every option>`` with the default trainer, and the ``VARIANTS``:
    the run directory of each. The options run as two real Hydra multiruns side by side, split by
    cost, the variants beside them, one torch thread each (a digits step is too small for two threads
    to help; two processes do), so that the suite stays within its time on two cores."""
    log_dir = tmp_path_factory.mktemp("quick_starts")
    runs = [start_cli("-m", f"optimizer={','.join(half)}", f"hydra.sweep.dir={log_dir / f'sweep{index}'}",
                      log_dir=log_dir, threads=1) for index, half in enumerate(halves_of_equal_cost(OPTIONS))]
    for name, overrides in VARIANTS.items():
        runs.append(start_cli(*overrides, f"hydra.run.dir={log_dir / name}", log_dir=log_dir, threads=1))
    for process in runs:
        finish_cli(process, timeout=1200)
    run_dirs = {OmegaConf.load(path).optimizer.name: path.parent for path in log_dir.glob("sweep*/*/config.yaml")}
    return {**run_dirs, **{name: log_dir / name for name in VARIANTS}}


@pytest.mark.parametrize("option", [*OPTIONS, *VARIANTS])
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
    "esam": ("optimizer=esam",),
    "rwp": ("optimizer=rwp",),
    "marwp": ("optimizer=marwp",),
    # Averaged from step 4 (EMA) and 4, 6 (SWA, whose LR switches to SWALR at step 3; BN recomputed
    # for every evaluation): all before the interruption at the end of epoch 1 (step 7).
    "sam-ema": ("optimizer=sam", "optimizer.averaging.kind=ema", "optimizer.averaging.decay=0.9",
                "optimizer.averaging.start=3"),
    "sgd-swa-swalr": ("optimizer=sgd", "optimizer.averaging.kind=swa", "optimizer.averaging.start=3",
                      "optimizer.averaging.every=2", "optimizer.averaging.swa_lr=0.02",
                      "optimizer.averaging.anneal_epochs=2"),
    "fisher_mask_sam": ("optimizer=fisher_mask_sam", "optimizer.mask_every=3"),   # mask steps 9 and 12 after resume
    "bsam-split": ("optimizer=bsam", "optimizer.batch_split=2"),
}


def test_every_registered_method_and_wrapper_has_a_resume_test():
    """A new method (a class registered in ``METHODS``) fails here until an entry of ``RESUMABLE``
    trains it, so that its state is tested to survive an interruption bit for bit."""
    trained = set()
    for overrides in RESUMABLE.values():
        option = next(override.removeprefix("optimizer=") for override in overrides
                      if override.startswith("optimizer="))
        trained.add(options()[option].get("method"))
        if proximal_lookahead(options()[option]) or "optimizer.lookahead.enabled=true" in overrides:
            trained.add("lookahead")
        trained |= {override.rpartition("=")[2] for override in overrides
                    if override.startswith("optimizer.averaging.kind=")}
    assert {*METHODS, "lookahead", "ema", "swa"} - trained == set()


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


@pytest.mark.parametrize("variant", ["sam-ema", "sgd-swa"])
def test_weight_averaging_reaches_the_accuracy_bar(quick_starts: dict[str, Path], variant: str):
    run_dir, overrides = quick_starts[variant], VARIANTS[variant]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs"] == 30
    kind = "EMA" if "optimizer=sam" in overrides else "SWA"
    assert summary["evaluated"] == f"the {kind} average"
    for model in ("last", "best_val", "last_training_weights"):
        assert summary["test"][model]["test/accuracy"] >= 0.90, model
    assert summary["test"]["last"] != summary["test"]["last_training_weights"]
    if kind == "SWA":      # SWALR from step 20·16 on: the LR ends at swa_lr, not where the cosine would
        assert epoch_records(run_dir)[-1]["lr"] == pytest.approx(0.05)


def test_lookahead_best_checkpoint_holds_the_slow_weights_and_summary_both_tests(cfg_factory):
    cfg = cfg_factory("optimizer=sam", "optimizer.lookahead.enabled=true", "optimizer.lookahead.k=3",
                      "trainer.epochs=1", "trainer.limit_train_batches=7")      # 7 steps: the fast weights moved on
    summary = run(cfg)
    run_dir = Path(cfg.paths.output_dir)
    last, best = load_checkpoint(run_dir / "last.pt"), load_checkpoint(run_dir / "best.pt", required=("model",))
    names = parameter_names_in_group_order(cfg)
    slow = [state["slow"] for _, state in sorted(last["optimizer"]["method"]["state"].items())]
    assert len(slow) == len(names)
    for name, value in zip(names, slow):
        assert torch.equal(best["model"][name], value), name
    assert any(not torch.equal(best["model"][name], last["model"][name]) for name in names)
    assert summary["evaluated"] == "the slow weights"
    assert set(summary["test"]) == {"last", "last_training_weights", "best_val"}
    assert summary["test"]["last"] == summary["test"]["best_val"]          # one epoch: best.pt is the last model
    assert summary["test"]["last"] != summary["test"]["last_training_weights"]


def parameter_names_in_group_order(cfg) -> list[str]:
    """The model's parameter names in the order of the optimizer's param groups (its state's indices)."""
    model = build_model(cfg.model)
    name_of = {id(param): name for name, param in model.named_parameters()}
    return [name_of[id(p)] for group in build_optimizer(cfg.optimizer, model).param_groups for p in group["params"]]


def test_swa_best_checkpoint_has_update_bn_statistics_and_last_the_training_ones(cfg_factory):
    cfg = cfg_factory("optimizer=sgd", "optimizer.averaging.kind=swa", "optimizer.averaging.start=2",
                      "trainer.epochs=1", "trainer.limit_train_batches=7")
    summary = run(cfg)
    assert summary["evaluated"] == "the SWA average"
    run_dir = Path(cfg.paths.output_dir)
    last, best = load_checkpoint(run_dir / "last.pt"), load_checkpoint(run_dir / "best.pt", required=("model",))
    model = build_model(cfg.model)
    names = parameter_names_in_group_order(cfg)
    averages = [state["average"] for _, state in sorted(last["optimizer"]["method"]["state"].items())]
    for name, average in zip(names, averages):
        assert torch.equal(best["model"][name], average), name
    # best.pt's statistics: update_bn with the average over the epoch's 7 training batches
    model.load_state_dict(best["model"])
    splits = build_dataset(cfg.dataset)
    loaders = make_loaders(splits, cfg.dataset, torch.device("cpu"), cfg.seed, 0, 1)
    loaders.train.sampler.set_epoch(0)
    update_bn((inputs for inputs, _ in islice(loaders.train, 7)), model)
    buffers = [name for name, _ in model.named_buffers()]
    assert buffers
    for name in buffers:
        assert torch.equal(model.state_dict()[name], best["model"][name]), name
    # last.pt's statistics: the training ones (7 steps of momentum 0.1), not update_bn's
    running = [name for name in buffers if "running" in name]
    assert running and all(not torch.equal(last["model"][name], best["model"][name]) for name in running)


@pytest.mark.parametrize("kind", ["ema", "swa"])
def test_averaging_does_not_change_the_training_run(cfg_factory, kind: str):
    """Dropout draws from torch's generator, which update_bn's forward passes (SWA) would advance."""
    overrides = ("optimizer=sgd", "trainer.epochs=2", "trainer.limit_train_batches=5", "model.dropout=0.2")
    averaged_cfg = cfg_factory(*overrides, f"optimizer.averaging.kind={kind}", "optimizer.averaging.start=2")
    plain_cfg = cfg_factory(*overrides)
    assert run(averaged_cfg)["evaluated"] == f"the {kind.upper()} average"
    run(plain_cfg)
    averaged, plain = (load_checkpoint(Path(cfg.paths.output_dir) / "last.pt") for cfg in (averaged_cfg, plain_cfg))
    for key, tensor in plain["model"].items():
        assert torch.equal(tensor, averaged["model"][key]), key

    def trained(record: dict) -> dict:
        return {key: value for key, value in record.items() if key.startswith("train/") or key == "lr"}

    averaged_epochs, plain_epochs = (epoch_records(Path(cfg.paths.output_dir)) for cfg in (averaged_cfg, plain_cfg))
    assert [trained(r) for r in averaged_epochs] == [trained(r) for r in plain_epochs]
    assert [r["val/loss"] for r in averaged_epochs] != [r["val/loss"] for r in plain_epochs]


def test_swa_resumed_mid_epoch_continues_bit_for_bit(cfg_factory, monkeypatch):
    """A mid-epoch checkpoint (step 10 of 14): the resumed epoch skips its first 3 batches, and
    update_bn at its end must still see the whole epoch."""
    overrides = ("optimizer=sgd", "optimizer.averaging.kind=swa", "optimizer.averaging.start=3",
                 "optimizer.averaging.swa_lr=0.02", "trainer.epochs=2", "trainer.limit_train_batches=7",
                 "trainer.checkpoint_every_n_steps=5")
    straight_cfg = cfg_factory(*overrides)
    run(straight_cfg)
    interrupted_cfg = cfg_factory(*overrides)
    real_step, calls = Stepper.step, []

    def step_then_die(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 12:
            raise Interrupt("killed at step 12")
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(Stepper, "step", step_then_die)
    with pytest.raises(Interrupt):
        run(interrupted_cfg)
    monkeypatch.setattr(Stepper, "step", real_step)
    run_dir = Path(interrupted_cfg.paths.output_dir)
    checkpoint = load_checkpoint(run_dir / "last.pt")
    assert (checkpoint["global_step"], checkpoint["progress"]["batches"]) == (10, 3)
    interrupted_cfg.trainer.resume = "auto"
    resumed_summary = run(interrupted_cfg)
    straight_dir = Path(straight_cfg.paths.output_dir)
    for name in ("last.pt", "best.pt"):
        straight, resumed = (load_checkpoint(d / name, required=("model",)) for d in (straight_dir, run_dir))
        for key, tensor in straight["model"].items():
            assert torch.equal(tensor, resumed["model"][key]), (name, key)
    straight_summary = json.loads((straight_dir / "summary.json").read_text())
    assert resumed_summary["test"] == straight_summary["test"]
