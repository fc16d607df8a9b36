"""Results you can trust: a diverged, interrupted or refused run says so, and no finished run is
overwritten. Real processes and real signals where signals are involved."""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from flatmin import rundir
from flatmin.errors import ConfigError, FlatminError
from flatmin.report.runs import find_runs
from flatmin.report.targets import time_to_target
from flatmin.report.render import headline
from flatmin.report.tables import build_sections
from flatmin.train import run
from flatmin.train.run import stopped_at_once
from tests.conftest import ROOT, run_cli


def strict_json(text: str):
    """Parse JSON, refusing NaN and Infinity (which strict readers reject)."""
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")
    return json.loads(text, parse_constant=refuse)


def digests(run_dir: Path) -> dict[str, str]:
    """The bytes of every file flatmin writes in a run directory."""
    return {name: hashlib.sha256((run_dir / name).read_bytes()).hexdigest()
            for name in rundir.RUN_FILES if (run_dir / name).is_file()}


def start(*args: str, log_dir: Path) -> subprocess.Popen:
    """``python train.py <args>`` as a background process."""
    env = {**os.environ, "FLATMIN_LOG_DIR": str(log_dir), "WANDB_SILENT": "true"}
    return subprocess.Popen([sys.executable, "train.py", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(condition, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def logged_steps(run_dir: Path) -> int:
    path = run_dir / rundir.METRICS
    return len(path.read_text().splitlines()) if path.is_file() else 0


# -- divergence ------------------------------------------------------------------------------------------
def test_a_diverged_run_stops_says_so_and_is_never_averaged(tmp_path: Path):
    run_dir = tmp_path / "diverged"
    result = run_cli("optimizer=sam", "optimizer.lr=1e6", "trainer.epochs=5", f"hydra.run.dir={run_dir}",
                     log_dir=tmp_path, check=False)
    assert result.returncode == rundir.EXIT_CODES[rundir.DIVERGED] == 3
    assert "Traceback" not in result.stderr
    assert "flatmin: error: The run diverged: the training loss was nan at epoch 1, step 10" in result.stderr
    summary = strict_json((run_dir / rundir.SUMMARY).read_text())
    assert summary["status"] == "diverged" and summary["epochs"] == 0 and summary["global_steps"] == 10
    for line in (run_dir / rundir.METRICS).read_text().splitlines():
        strict_json(line)
    assert not (run_dir / rundir.BEST).exists()
    (found,) = find_runs([run_dir])
    assert found.status == "diverged" and "diverged" in found.error
    assert "0 completed, 0 failed, 1 diverged" in headline([found], [str(tmp_path)])


def test_a_loss_past_the_divergence_threshold_stops_the_run(cfg_factory):
    cfg = cfg_factory("trainer.epochs=3", "trainer.divergence_threshold=1.5", "optimizer.lr=100")
    with pytest.raises(FlatminError, match=r"exceeds 1.5 × the first step.s .* trainer.divergence_threshold"):
        run(cfg)
    assert rundir.read_summary(Path(cfg.paths.output_dir))["status"] == "diverged"


def test_a_loss_blown_up_short_of_inf_is_diverged_by_default(tmp_path: Path):
    """lr 150 drives the loss to ~1e14 without reaching inf: it used to end "completed" with exit 0."""
    result = run_cli("optimizer.lr=150", "trainer.epochs=2", log_dir=tmp_path, check=False)
    assert result.returncode == rundir.EXIT_CODES[rundir.DIVERGED] == 3
    assert "exceeds 1000 × the first step's" in result.stderr and "Traceback" not in result.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert rundir.status(run_dir) == rundir.DIVERGED


# -- the best model ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("overrides", "message"), [
    (["trainer.monitor=val/acuracy"], "trainer.monitor must be a metric this run's validation produces: one of "
                                      "val/loss, val/accuracy (got 'val/acuracy')."),
    (["trainer.monitor_mode=maximize"], "trainer.monitor_mode must be one of auto, min, max (got 'maximize')."),
    (["dataset.split.test_fraction=0.9"], "dataset.split.val_fraction + dataset.split.test_fraction must be < 1"),
    (["trainer.device=gpu"], "trainer.device must be auto, cpu, cuda or cuda:N (got 'gpu')."),
    (["dataset.num_classes=5"], "digits has 10 classes but dataset.num_classes is 5"),
    (["dataset.batch_size=5000"], "dataset.batch_size (5000) is larger than the training split (1077 examples)"),
    (["trainer.resume_accept=optimizer.lr"], "trainer.resume_accept must be a list of config keys"),
    (["optimizer=bsam", "optimizer.batch_split=3"], "dataset.batch_size=64 does not suit optimizer 'bsam': BSAM: the "
                                                    "batch has B=64 rows, not divisible by batch_split=3"),
    (["optimizer=esam", "dataset.batch_size=1"], "dataset.batch_size=1 does not suit optimizer 'esam': ESAM: gamma·B = "
                                                 "0.5·1 selects no row"),
    (["optimizer=marwp", "dataset.batch_size=1"], "dataset.batch_size=1 does not suit optimizer 'marwp': RWP: lam < 1 "
                                                  "splits the batch into a clean and a noisy half"),
    (["optimizer.averaging.kind=ema", "optimizer.averaging.start=50", "optimizer.averaging.interval=epoch"],
     "optimizer.averaging would average nothing: its first update comes after base step 816 and the run takes 16 "
     "steps (1 × 16)"),
    (["optimizer.averaging.kind=ema", "optimizer.averaging.decay=1"], "optimizer.averaging.decay=1 keeps the EMA at "
                                                                      "its first copy"),
    (["trainer.accumulate_grad_batches=32"], "trainer.accumulate_grad_batches (32) is more than the 16 micro-batches "
                                             "of an epoch"),
])
def test_a_slip_is_refused_in_one_sentence_before_training(cfg_factory, overrides, message):
    cfg = cfg_factory("trainer.epochs=1", *overrides)
    with pytest.raises(FlatminError) as caught:
        run(cfg)
    assert str(caught.value).startswith(message), str(caught.value)
    assert not (Path(cfg.paths.output_dir) / rundir.LAST).exists()
    assert not (Path(cfg.paths.output_dir) / rundir.CONFIG).exists()        # refused before anything is written


def test_a_methods_batch_rule_is_one_sentence_and_exit_2_from_the_command_line(tmp_path: Path):
    """bSAM's sub-batches, checked from the config before work (it used to fail at the first step, with
    a traceback, after the run directory was written)."""
    result = run_cli("optimizer=bsam", "optimizer.batch_split=3", f"hydra.run.dir={tmp_path / 'run'}",
                     log_dir=tmp_path, check=False)
    assert result.returncode == rundir.EXIT_CODES["bad input"] and "Traceback" not in result.stderr
    assert "flatmin: error: dataset.batch_size=64 does not suit optimizer 'bsam': BSAM: the batch has B=64 rows, " \
           "not divisible by batch_split=3" in result.stderr
    assert not (tmp_path / "run" / rundir.CONFIG).exists()


def test_a_loss_monitor_picks_the_epoch_of_least_validation_loss(cfg_factory):
    cfg = cfg_factory("trainer.epochs=4", "trainer.monitor=val/loss", "optimizer.lr=0.5")
    summary = run(cfg)
    lines = (Path(cfg.paths.output_dir) / rundir.METRICS).read_text().splitlines()
    epochs = [record for record in map(json.loads, lines) if record["event"] == "epoch"]
    assert summary["best_val"]["val/loss"] == min(record["val/loss"] for record in epochs)


def test_without_a_validation_split_the_final_model_is_the_one_reported(cfg_factory):
    cfg = cfg_factory("trainer.epochs=2", "dataset.split.val_fraction=0")
    summary = run(cfg)
    assert summary["status"] == "completed" and summary["best_val"]["epoch"] == 2      # best.pt is the final model
    assert set(summary["test"]) == {"last"}               # no best-validation model to test
    generic = build_sections(find_runs([Path(cfg.paths.output_dir)]))[0].tables[0]
    assert generic.title == "test accuracy (%), final model"
    assert generic.entries[("sgd", "digits")].ours.mean == pytest.approx(100 * summary["test"]["last"]["test/accuracy"])


# -- run directories ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A completed one-epoch run in a fixed directory, as with ``hydra.run.dir=<dir>``."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    run_cli("trainer.epochs=1", f"hydra.run.dir={run_dir}", log_dir=run_dir.parent)
    return run_dir


@pytest.mark.parametrize(("overrides", "message"), [
    (["optimizer.lr=-1"], "optimizer.lr must be a number > 0 (got -1)."),
    ([], "already holds a run (status completed); continue it with trainer.resume=auto"),
    (["trainer.resume=auto", "model=resnet18"], "Resuming "),
    (["trainer.resume=auto", "optimizer.lr=0.5"], "with other settings than it was trained with: optimizer.lr "
                                                  "(0.1 → 0.5); resume with its settings, or accept the change with "
                                                  "trainer.resume_accept=[optimizer.lr]."),
    (["trainer.resume=auto", "seed=1", "trainer.resume_accept=[seed]"],
     "seed cannot change on resume (0 → 1): the random generators continue from the checkpoint's state"),
])
def test_a_refused_launch_leaves_a_finished_run_byte_identical(finished_run: Path, overrides, message):
    before = digests(finished_run)
    result = run_cli("trainer.epochs=1", f"hydra.run.dir={finished_run}", *overrides, log_dir=finished_run.parent,
                     check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert message in result.stderr
    assert digests(finished_run) == before


def test_resuming_a_completed_run_does_nothing_and_says_so(finished_run: Path):
    before = digests(finished_run)
    result = run_cli("trainer.epochs=1", f"hydra.run.dir={finished_run}", "trainer.resume=auto",
                     log_dir=finished_run.parent)
    assert "has completed; nothing to do" in result.stdout + result.stderr
    assert "flatmin: completed: test/accuracy" in result.stderr and str(finished_run) in result.stderr
    assert digests(finished_run) == before


def test_an_accepted_change_takes_effect_from_the_resume_on(tmp_path: Path):
    """``trainer.resume_accept`` used to record a new lr and momentum while the optimizer kept the
    checkpoint's: the resumed epoch must train with the new values, and the summary say so."""
    run_dir = tmp_path / "run"
    run_cli("trainer.epochs=1", "scheduler=constant", f"hydra.run.dir={run_dir}", log_dir=tmp_path)
    first_launch = (run_dir / ".hydra" / "overrides.yaml").read_text()
    run_cli("trainer.epochs=2", "scheduler=constant", f"trainer.resume={run_dir}", "optimizer.lr=0.5",
            "optimizer.momentum=0.5", "trainer.resume_accept=[optimizer.lr,optimizer.momentum]", log_dir=tmp_path)
    records = [json.loads(line) for line in (run_dir / rundir.METRICS).read_text().splitlines()]
    assert [record["lr"] for record in records if record["event"] == "epoch"] == [0.1, 0.5]
    groups = rundir.load_checkpoint(run_dir / rundir.LAST)["optimizer"]["param_groups"]
    assert {(group["lr"], group["momentum"]) for group in groups} == {(0.5, 0.5)}
    assert rundir.read_summary(run_dir)[rundir.RESUMES][0]["changes"] == {
        "optimizer.lr": [0.1, 0.5], "optimizer.momentum": [0.9, 0.5], "trainer.epochs": [1, 2]}

    # Issue 20 §5: one run stays one run. The resume by path made no second run directory: its log
    # continues the run's own, and Hydra's record of it sits beside the first launch's, which is kept.
    assert not (tmp_path / "runs").exists()
    assert "resumed " in (run_dir / "train.log").read_text().split("epoch 1/1", 1)[1]
    assert (run_dir / ".hydra" / "overrides.yaml").read_text() == first_launch
    (record,) = (run_dir / ".hydra" / "resumes").iterdir()
    assert "trainer.resume=" in (record / "overrides.yaml").read_text()
    before = digests(run_dir)
    refused = run_cli("trainer.epochs=2", "scheduler=constant", f"trainer.resume={run_dir}", "optimizer.lr=0.7",
                      log_dir=tmp_path, check=False)
    assert refused.returncode == 2 and "optimizer.lr (0.5 → 0.7)" in refused.stderr
    assert not (tmp_path / "runs").exists() and digests(run_dir) == before
    assert list((run_dir / ".hydra" / "resumes").iterdir()) == [record]
    (found,) = find_runs([tmp_path])
    assert found.status == rundir.COMPLETED


def test_a_refused_single_launch_leaves_no_run_directory(tmp_path: Path):
    """A refused launch used to leave Hydra's directory with a failed summary, which the report counted."""
    result = run_cli("optimizer.lr=-1", log_dir=tmp_path, check=False)
    assert result.returncode == rundir.EXIT_CODES["bad input"]
    assert "flatmin: error: optimizer.lr must be a number > 0 (got -1)." in result.stderr
    assert list((tmp_path / "runs").iterdir()) == []
    elsewhere = tmp_path / "elsewhere"                # a resume of a file in a folder that holds no run
    elsewhere.mkdir()
    (elsewhere / "notes.pt").write_text("not a checkpoint")
    result = run_cli(f"trainer.resume={elsewhere / 'notes.pt'}", log_dir=tmp_path, check=False)
    assert result.returncode == rundir.EXIT_CODES["bad input"] and "cannot be read" in result.stderr
    assert list((tmp_path / "runs").iterdir()) == [] and [p.name for p in elsewhere.iterdir()] == ["notes.pt"]


def test_a_refused_sweep_job_leaves_its_reason_for_the_report(cfg_factory, tmp_path: Path):
    cfg = cfg_factory("optimizer.lr=-1")
    Path(cfg.paths.output_dir).mkdir(parents=True)          # Hydra made the job's directory
    with pytest.raises(ConfigError):
        run(cfg)
    (found,) = find_runs([Path(cfg.paths.output_dir)])
    assert (found.status, found.error) == ("failed", "ConfigError: optimizer.lr must be a number > 0 (got -1).")


def test_a_second_process_on_a_run_directory_in_use_is_refused(tmp_path: Path):
    run_dir = tmp_path / "run"
    first = start("trainer.epochs=10000", "trainer.log_every_n_steps=1", f"hydra.run.dir={run_dir}", log_dir=tmp_path)
    try:
        wait_for(lambda: logged_steps(run_dir) >= 1)
        resuming = start("trainer.epochs=10000", "trainer.resume=auto", f"hydra.run.dir={run_dir}", log_dir=tmp_path)
        plain = start("trainer.epochs=10000", f"hydra.run.dir={run_dir}", log_dir=tmp_path)
        for process in (resuming, plain):         # the plain launch is not told to resume a run that is running
            _, stderr = process.communicate(timeout=300)
            assert process.returncode == 2
            assert f"flatmin: error: Run directory {run_dir} is in use by process {first.pid}" in stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=300)
    assert first.returncode == rundir.EXIT_CODES[rundir.INTERRUPTED]


# -- preemption --------------------------------------------------------------------------------------------
#: A run that draws from the generator every step (dropout) and takes 2 epochs of 16 steps.
PREEMPTED = ("optimizer=sam", "model.dropout=0.2", "trainer.epochs=2", "trainer.log_every_n_steps=1")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    run_cli(*PREEMPTED, f"hydra.run.dir={run_dir}", log_dir=run_dir.parent)
    return run_dir


def assert_same_training(expected: Path, actual: Path) -> None:
    """The same weights, optimizer state and logged numbers (times aside) as the uninterrupted run."""
    a, b = rundir.load_checkpoint(expected / rundir.LAST), rundir.load_checkpoint(actual / rundir.LAST)
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key
    for (key, x), y in zip(a["optimizer"]["base"]["state"].items(), b["optimizer"]["base"]["state"].values()):
        assert torch.equal(x["momentum_buffer"], y["momentum_buffer"]), key

    def numbers(run_dir: Path) -> list[dict]:
        records = map(json.loads, (run_dir / rundir.METRICS).read_text().splitlines())
        return [{k: v for k, v in r.items() if "time" not in k and "per_s" not in k} for r in records]

    assert numbers(expected) == numbers(actual)
    assert rundir.read_summary(actual)["test"] == rundir.read_summary(expected)["test"]


def test_sigterm_mid_epoch_checkpoints_and_the_resumed_run_is_bit_for_bit_the_same(tmp_path: Path,
                                                                                  uninterrupted: Path):
    run_dir = tmp_path / "run"
    process = start(*PREEMPTED, f"hydra.run.dir={run_dir}", log_dir=tmp_path)
    wait_for(lambda: logged_steps(run_dir) >= 5)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == rundir.EXIT_CODES[rundir.INTERRUPTED] == 4
    assert "Traceback" not in stderr
    (line,) = [line for line in stderr.splitlines() if line.startswith("flatmin: interrupted")]
    assert "stopped by SIGTERM at epoch 1, step " in line and f"hydra.run.dir={run_dir} trainer.resume=auto" in line
    summary = strict_json((run_dir / rundir.SUMMARY).read_text())
    assert summary["status"] == "interrupted" and summary["epochs"] == 0
    assert rundir.load_checkpoint(run_dir / rundir.LAST)["progress"]["batches"] >= 5       # mid-epoch
    run_cli(*PREEMPTED, f"hydra.run.dir={run_dir}", "trainer.resume=auto", log_dir=tmp_path)
    assert_same_training(uninterrupted, run_dir)          # the epoch records' passes continue too
    assert rundir.read_summary(run_dir)["resumes"][0]["batch_in_epoch"] >= 5
    epochs = [record for record in map(json.loads, (run_dir / rundir.METRICS).read_text().splitlines())
              if record["event"] == "epoch"]
    assert 0 < epochs[0][rundir.TRAIN_TIME] < epochs[1][rundir.TRAIN_TIME]     # seconds continue over the resume
    target = epochs[1]["val/accuracy"]                    # reached at the second epoch (or the first)
    for unit in ("epochs", "steps", "passes"):
        assert time_to_target(run_dir, "val/accuracy", target, unit=unit) == \
            time_to_target(uninterrupted, "val/accuracy", target, unit=unit) < math.inf


def test_kill_9_after_a_mid_epoch_checkpoint_resumes_bit_for_bit(tmp_path: Path, uninterrupted: Path):
    run_dir = tmp_path / "run"
    process = start(*PREEMPTED, "trainer.checkpoint_every_n_steps=4", f"hydra.run.dir={run_dir}", log_dir=tmp_path)

    def mid_epoch_checkpoint() -> bool:
        try:
            return rundir.load_checkpoint(run_dir / rundir.LAST).get("progress", {}).get("batches", 0) >= 8
        except FlatminError:
            return False

    wait_for(mid_epoch_checkpoint)
    process.kill()
    process.communicate(timeout=60)
    assert rundir.status(run_dir) == "unfinished"
    run_cli(*PREEMPTED, "trainer.checkpoint_every_n_steps=4", f"hydra.run.dir={run_dir}", "trainer.resume=auto",
            log_dir=tmp_path)
    assert_same_training(uninterrupted, run_dir)


def test_a_sweep_run_again_continues_its_interrupted_job_and_runs_the_rest(tmp_path: Path, uninterrupted: Path):
    """README, "When things go wrong" (resuming a sweep): the same -m command with its sweep directory and
    resume=auto."""
    sweep = tmp_path / "a sweep"                            # the printed command is shell-quoted
    process = start("-m", *PREEMPTED, "seed=0,1", f"hydra.sweep.dir={sweep}", log_dir=tmp_path)
    wait_for(lambda: logged_steps(sweep / "0") >= 5)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == rundir.EXIT_CODES[rundir.INTERRUPTED]
    assert rundir.status(sweep / "0") == "interrupted" and not (sweep / "1").exists()
    # Issue 20 §7: the closing line counts the job never launched, and the command continues the sweep.
    assert "0 of 2 jobs completed (1 interrupted, 1 not launched)" in stderr
    assert "#1 not launched  optimizer=sam model.dropout=0.2 trainer.epochs=2 trainer.log_every_n_steps=1 seed=1" \
        in stderr
    (command,) = {line.split("continue the sweep with: ", 1)[1] for line in stderr.splitlines()
                  if "continue the sweep with: " in line}
    assert command.endswith("trainer.resume=auto") and " -m " in command
    assert rundir.read_summary(sweep / "0")[rundir.ERROR].endswith(f"continue with: {command}")
    subprocess.run(command, shell=True, check=True, cwd=ROOT, capture_output=True,
                   env={**os.environ, "FLATMIN_LOG_DIR": str(tmp_path)})
    assert [rundir.status(sweep / job) for job in ("0", "1")] == ["completed", "completed"]
    assert_same_training(uninterrupted, sweep / "0")


def test_one_ctrl_c_early_is_told_as_one_and_its_printed_command_finishes_the_run(tmp_path: Path):
    """One Ctrl-C before the first checkpoint was told as "second Ctrl-C ... keeps its last checkpoint", and
    the printed command then failed (no last.pt; unquoted, a folder with a space broke it). Whenever this
    Ctrl-C lands (before training, or in it), the message tells one signal and its command finishes the run."""
    log_dir = tmp_path / "my runs"
    run_dir = log_dir / "run"
    process = start("trainer.epochs=1", f"hydra.run.dir={run_dir}", log_dir=log_dir)
    wait_for(lambda: (run_dir / ".hydra").is_dir())
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == rundir.EXIT_CODES[rundir.INTERRUPTED]
    assert "Traceback" not in stderr and "second" not in stderr
    (line,) = [line for line in stderr.splitlines() if line.startswith("flatmin: interrupted: ")]
    command = line.split(" with: ", 1)[1]
    if not (run_dir / rundir.LAST).is_file():
        assert "before" in line                              # nothing to continue from: said, and started anew
    finished = subprocess.run(command, shell=True, cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "FLATMIN_LOG_DIR": str(log_dir)})
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert rundir.status(run_dir) == rundir.COMPLETED
    assert [path.name for path in log_dir.iterdir()] == ["run"]


def test_a_ctrl_c_that_stops_at_once_says_which_one_and_how_the_run_goes_on(tmp_path: Path):
    second, first = stopped_at_once(tmp_path, second=True), stopped_at_once(tmp_path, second=False)
    command = f"python -m flatmin.train hydra.run.dir={tmp_path} trainer.resume=auto"
    assert second == f"stopped at once by a second Ctrl-C, before its first checkpoint; start it again with: {command}"
    assert first.startswith("stopped at once by Ctrl-C, before its first checkpoint;")
    (tmp_path / rundir.LAST).touch()
    assert stopped_at_once(tmp_path, second=True) == \
        f"stopped at once by a second Ctrl-C; continue from its last checkpoint with: {command}"


def submitit_task() -> int:
    """The process of the running submitit_local job (``python -m submitit.core._submit``)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"submitit.core._submit" in command:
                return int(entry.name)
    raise AssertionError("no submitit task process")


def test_a_preempted_submitit_job_is_requeued_and_finishes(tmp_path: Path):
    sweep = tmp_path / "sweep"
    process = start("-m", "hydra/launcher=submitit_local", "trainer.resume=auto", "trainer.epochs=3",
                    "trainer.log_every_n_steps=1", f"hydra.sweep.dir={sweep}", log_dir=tmp_path)
    wait_for(lambda: logged_steps(sweep / "0") >= 5)
    os.kill(submitit_task(), signal.SIGUSR2)               # what SLURM sends before preempting a submitit job
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    summary = rundir.read_summary(sweep / "0")
    assert summary["status"] == "completed" and summary["epochs"] == 3
    assert len(summary["resumes"]) == 1


# -- the environment ---------------------------------------------------------------------------------------
def test_a_full_disk_names_the_file_and_keeps_the_previous_one(tmp_path: Path):
    """A real limit on the size of written files (RLIMIT_FSIZE), as a full disk refuses writes."""
    import resource

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)      # refused writes fail with EFBIG instead of a signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    env = {**os.environ, "FLATMIN_LOG_DIR": str(tmp_path), "WANDB_SILENT": "true"}
    run_dir = tmp_path / "run"
    result = subprocess.run([sys.executable, "train.py", "trainer.epochs=1", f"hydra.run.dir={run_dir}"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=300, preexec_fn=limit_file_size)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"flatmin: error: Could not write {run_dir / rundir.BEST}: it could not be written in full (a full " \
           "disk, a quota or a file-size limit); the previous version of that file, if any, is intact." in result.stderr
    assert not (run_dir / (rundir.BEST + ".tmp")).exists()


@pytest.mark.parametrize("where", ["under a file", "procfs"])
def test_a_run_directory_that_cannot_be_made_is_one_sentence_and_exit_2(tmp_path: Path, where: str):
    """Hydra makes the run directory before flatmin runs: a log dir it cannot make was Hydra's traceback."""
    (tmp_path / "a_file").write_text("")
    log_dir = tmp_path / "a_file" / "logs" if where == "under a file" else Path("/proc/flatmin_logs")
    result = run_cli("trainer.epochs=1", f"paths.log_dir={log_dir}", log_dir=tmp_path, check=False)
    assert result.returncode == rundir.EXIT_CODES["bad input"] and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"flatmin: error: the run directory {log_dir}/runs/") and "cannot be made" in line


def test_a_report_folder_that_cannot_be_written_is_one_sentence_and_exit_2(finished_run: Path, tmp_path: Path):
    (tmp_path / "a_file").write_text("")
    result = subprocess.run([sys.executable, "-m", "flatmin.report", str(finished_run), "--out",
                             str(tmp_path / "a_file" / "report")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == (f"flatmin.report: error: the report cannot be written to "
                                     f"{tmp_path / 'a_file' / 'report'}: {tmp_path / 'a_file'} is a file.")


def test_an_online_wandb_run_without_network_is_one_sentence_at_once(tmp_path: Path):
    """With a key but no network, wandb retried for 111 s, then printed a traceback. Port 9 of this
    machine accepts no connection, as a W&B server behind a dead network."""
    env = {**os.environ, "FLATMIN_LOG_DIR": str(tmp_path), "WANDB_API_KEY": "x" * 40,
           "WANDB_BASE_URL": "http://127.0.0.1:9"}
    result = subprocess.run([sys.executable, "train.py", "logger=wandb", "logger.wandb.mode=online"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == rundir.EXIT_CODES["bad input"]
    assert result.stderr.strip().splitlines()[-1] == (
        "flatmin: error: logger.wandb.mode=online cannot reach the W&B server http://127.0.0.1:9 from this "
        "machine; log offline with logger.wandb.mode=offline and upload later with wandb sync.")
    assert list((tmp_path / "runs").iterdir()) == []


def test_an_online_wandb_run_without_a_login_is_refused_before_work(cfg_factory, monkeypatch, tmp_path: Path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))              # no ~/.netrc
    cfg = cfg_factory("logger=wandb", "logger.wandb.mode=online")
    with pytest.raises(ConfigError, match=r"^logger.wandb.mode=online needs a W&B login \(wandb login, or "):
        run(cfg)
