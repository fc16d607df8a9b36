"""The run entry behind ``train.py``: config → checks → parts (``flatmin.assembly``) → Trainer → run directory.

``run(cfg)`` does one job and returns its summary (tests call it directly); ``main(cfg)`` is what
``train.py`` calls under Hydra: it turns a :class:`~flatmin.errors.FlatminError` into one sentence on
stderr and exit status 2, and returns the monitored validation metric for Hydra sweepers.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from flatmin import rundir
from flatmin.assembly import Parts, assemble
from flatmin.errors import ConfigError, DivergedError, FlatminError
from flatmin.rundir import flatten, load_checkpoint
from flatmin.runtime import Runtime
from flatmin.runtime.distributed import replica_seed
from flatmin.sharpness import AnalysisOptions, in_brief, measure_run, select_parameters
from flatmin.sharpness.checkpoints import load_other
from flatmin.train.checkpoint_triggers import CheckpointTriggers, RunInterrupted, SecondCtrlC
from flatmin.train.commands import continue_command
from flatmin.train.loggers import JsonlLogger, Loggers, WandbLogger, wandb_online_problem
from flatmin.train.resume_in_place import RESUME_RECORDS
from flatmin.train.seeding import seed_everything
from flatmin.train.trainer import Trainer
from flatmin.tuning import apply_trial
from flatmin.validation import validate

log = logging.getLogger(__name__)


def hydra_context() -> dict[str, Any]:
    """The job's name, its sweep (the W&B group) and the chosen config options, when under Hydra."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return {"name": None, "group": None, "choices": {}, "multirun": False, "single": False}
    hydra = HydraConfig.get()
    multirun = hydra.mode == RunMode.MULTIRUN
    return {
        "multirun": multirun,
        "single": not multirun,
        "name": f"{Path(hydra.sweep.dir).name}-{hydra.job.num}" if multirun else Path(hydra.runtime.output_dir).name,
        "group": Path(hydra.sweep.dir).name if multirun else None,
        "choices": {k: v for k, v in hydra.runtime.choices.items() if not k.startswith("hydra")},
    }


def open_loggers(cfg: DictConfig, run_dir: Path, config: dict[str, Any], checkpoint: dict[str, Any] | None) -> Loggers:
    """metrics.jsonl always (keeping a resumed run's history up to its checkpoint), plus W&B when configured."""
    step = checkpoint["global_step"] if checkpoint else None
    loggers: list[Any] = [JsonlLogger(run_dir / rundir.METRICS, step)]
    if cfg.logger.get("wandb"):
        context = hydra_context()
        run_id = checkpoint["trainer"]["wandb_run_id"] if checkpoint else None
        loggers.append(WandbLogger(cfg.logger.wandb, config, run_dir, context["name"], context["group"], run_id))
    return Loggers(loggers)


def run_directory(cfg: DictConfig) -> Path:
    """Where the run lives: Hydra's directory, or the directory of the run that a checkpoint or run
    directory given as ``trainer.resume`` belongs to (a resumed run continues in its own directory)."""
    resume = cfg.trainer.resume
    return Path(cfg.paths.output_dir) if resume in (None, "auto") else rundir.resumed_run_dir(resume)


def plan_run(cfg: DictConfig, guard: bool = True) -> tuple[Path, Path | None]:
    """The run directory and the checkpoint to continue from, as ``trainer.resume`` asks.

    ``null``: a new run in Hydra's directory, which must not hold one. ``auto``: that directory's
    own ``last.pt`` when there is one, else a new run there (said in the log). A checkpoint file or
    a run directory: that run, continued in its own directory. Nothing but a resume of a run writes
    into its directory (checked by the main replica, ``guard``: the others start after it has
    begun writing there).
    """
    run_dir, resume = run_directory(cfg), cfg.trainer.resume
    if resume is None:
        if guard and (holder := rundir.lock_holder(run_dir)) is not None:
            raise rundir.in_use(run_dir, holder)
        if guard and rundir.holds_run(run_dir):
            raise rundir.RunDirError(
                f"{run_dir} already holds a run (status {rundir.status(run_dir)}); continue it with "
                "trainer.resume=auto, or give this run another directory.")
        return run_dir, None
    checkpoint = run_dir / rundir.LAST if resume == "auto" or Path(resume).is_dir() else Path(resume)
    if resume == "auto" and not checkpoint.is_file():
        log.info("trainer.resume=auto: no checkpoint in %s, so this is a new run", run_dir)
        return run_dir, None
    return run_dir, checkpoint


#: Settings a resumed run may change: they do not change what is trained (``trainer.epochs`` may
#: also grow; see :func:`changes_on_resume`).
RESUME_MAY_CHANGE = ("paths", "logger", "trainer.resume", "trainer.resume_accept", "trainer.progress_bar",
                     "trainer.log_every_n_steps", "trainer.checkpoint_every_n_steps",
                     "trainer.checkpoint_every_minutes", "trainer.test_every_epoch", "trainer.sharpness",
                     "trainer.divergence_threshold",
                     "dataset.num_workers", "dataset.eval_batch_size")


#: Settings a resumed run cannot change even when accepted, and why.
NOT_CHANGEABLE_ON_RESUME = {"seed": "the random generators continue from the checkpoint's state"}


def changes_on_resume(checkpoint: dict[str, Any], current: dict[str, Any], accepted: list[str],
                      source: Path) -> dict[str, list[Any]]:
    """The settings a resumed run changes, as ``{key: [checkpoint's, now]}``, after checking them:
    a change that alters what is trained stops the run with the keys listed, unless
    ``trainer.resume_accept`` names them (it then takes effect from the resumed step on:
    ``Trainer.load_state_dict``); ``trainer.epochs`` may grow (the LR schedule is then built
    for the new length from the resumed step on, which the log says); ``seed`` cannot change."""
    before, after = flatten(checkpoint["config"], separator="."), flatten(current, separator=".")
    changed = {key: [before.get(key), after.get(key)] for key in sorted(set(before) | set(after))
               if before.get(key) != after.get(key) and not key.startswith(RESUME_MAY_CHANGE)}
    epochs = changed.pop("trainer.epochs", None)
    for key, why in NOT_CHANGEABLE_ON_RESUME.items():
        if key in changed:
            raise ConfigError(f"{key} cannot change on resume ({changed[key][0]!r} → {changed[key][1]!r}): {why}; "
                              "resume with the checkpoint's, or start a new run.")
    if "optimizer.lr" in changed and checkpoint.get("swa_scheduler") is not None:
        raise ConfigError("optimizer.lr cannot change on resume once the LR schedule has given way to SWALR "
                          "(optimizer.averaging.swa_lr sets the LR now); resume with the checkpoint's lr.")
    refused = [key for key in changed if key not in accepted]
    if refused:
        listed = ", ".join(f"{key} ({changed[key][0]!r} → {changed[key][1]!r})" for key in refused)
        raise ConfigError(f"Resuming {source} with other settings than it was trained with: {listed}; resume with "
                          f"its settings, or accept the change with trainer.resume_accept=[{','.join(refused)}].")
    if epochs is not None:
        if epochs[1] < epochs[0]:
            raise ConfigError(f"trainer.epochs may grow on resume, not shrink ({epochs[0]} → {epochs[1]}).")
        log.warning("trainer.epochs grew from %d to %d: the LR schedule continues as one of %d epochs from the resumed "
                    "step, so the epochs before it followed a %d-epoch schedule", *epochs, epochs[1], epochs[0])
        changed["trainer.epochs"] = epochs
    return changed


def hydra_record(output_dir: Path) -> Path | None:
    """The folder where Hydra saved this job's configs (``.hydra`` unless redirected), when under Hydra."""
    from hydra.core.hydra_config import HydraConfig

    subdir = HydraConfig.get().output_subdir if HydraConfig.initialized() else None
    return output_dir / subdir if subdir is not None else None


def withdraw_launch(cfg: DictConfig) -> bool:
    """Take back what a launch that does no work (refused, or stopped before it started) left in its
    directory; whether that directory is a sweep's job (or outside Hydra), which keeps a record.

    A directory that holds a run keeps it as it was; only Hydra's record of this launch
    (``.hydra/resumes/<time>/``, see ``ResumeInPlace``) goes. A single launch leaves nothing: the
    directory Hydra made for it, holding only Hydra's own files (``.hydra/``, the log), is removed,
    so that no report counts a run that never was."""
    output_dir = Path(cfg.paths.output_dir)
    if not output_dir.is_dir():
        return False
    if rundir.holds_run(output_dir):
        if (record := hydra_record(output_dir)) is not None and record.parent == output_dir / RESUME_RECORDS:
            shutil.rmtree(record)
        return False
    made_by_hydra = (output_dir / ".hydra").is_dir() and all(
        path.name == ".hydra" or path.suffix == ".log" for path in output_dir.iterdir())
    if hydra_context()["single"] and made_by_hydra:
        shutil.rmtree(output_dir)
        return False
    return True


def refuse(cfg: DictConfig, error: FlatminError) -> None:
    """A refused launch leaves nothing (:func:`withdraw_launch`) but, in a sweep's job, its reason
    in ``summary.json``, for the sweep's list and the report."""
    if withdraw_launch(cfg):
        rundir.write_json({rundir.STATUS: rundir.FAILED, rundir.ERROR: f"{type(error).__name__}: {error}"},
                          Path(cfg.paths.output_dir) / rundir.SUMMARY)


def stopped_at_once(run_dir: Path, second: bool) -> str:
    """What a Ctrl-C that stopped the run without its orderly stop says: which Ctrl-C it was, and
    the command that continues the run, from its last checkpoint or, without one, from the start."""
    how = "stopped at once by a second Ctrl-C" if second else "stopped at once by Ctrl-C"
    if (run_dir / rundir.LAST).is_file():
        return f"{how}; continue from its last checkpoint with: {continue_command(run_dir)}"
    return f"{how}, before its first checkpoint; start it again with: {continue_command(run_dir)}"


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train one job as configured and return its summary (also written to ``summary.json``).

    Bad input stops the job before any work, with nothing written into a directory that holds a
    run: the config's values, the resume, and whatever assembling the run's parts refuses (the
    data, the optimizer). A resumed run that had completed returns its summary untouched. Whatever
    stops the job after that is recorded in ``summary.json`` (``failed``, or ``diverged`` with the
    epoch and step) before the exception propagates, so a sweep's failures stay visible.
    """
    try:
        apply_trial(cfg)
        validate(cfg)
        if cfg.logger.get("wandb") and (problem := wandb_online_problem(cfg.logger.wandb)):
            raise ConfigError(problem)
        runtime = Runtime.from_config(cfg.trainer)
        run_dir, checkpoint_path = plan_run(cfg, guard=runtime.replica.is_main)
        checkpoint = load_checkpoint(checkpoint_path) if checkpoint_path else None
        seed_everything(replica_seed(cfg.seed, runtime.replica.rank), cfg.trainer.deterministic)
        parts = assemble(cfg, runtime)
        if cfg.trainer.sharpness:
            select_parameters(parts.module, cfg.trainer.sharpness_params)  # an empty selection fails now
        changes = changes_on_resume(checkpoint, parts.config, list(cfg.trainer.resume_accept),
                                    checkpoint_path) if checkpoint else {}
    except FlatminError as error:
        refuse(cfg, error)
        raise
    except KeyboardInterrupt:
        withdraw_launch(cfg)
        raise KeyboardInterrupt(f"stopped by Ctrl-C before training started; run it again with: "
                                f"{continue_command(run_directory(cfg))}") from None
    replica = runtime.replica
    if checkpoint is not None and rundir.status(run_dir) == rundir.COMPLETED and not changes:
        log.info("%s has completed; nothing to do", run_dir)
        return rundir.read_summary(run_dir)
    with rundir.locked(run_dir) if replica.is_main else contextlib.nullcontext():
        if replica.is_main:
            rundir.write_text(OmegaConf.to_yaml(parts.config), run_dir / rundir.CONFIG)
        try:
            return _train(cfg, parts, run_dir, checkpoint, changes, runtime)
        except (DivergedError, SystemExit):       # diverged or interrupted: its summary is written
            raise
        except KeyboardInterrupt as stop:          # a second Ctrl-C, or one before the orderly stop is set up
            message = stopped_at_once(run_dir, second=isinstance(stop, SecondCtrlC))
            if replica.is_main:
                rundir.write_json({rundir.STATUS: rundir.INTERRUPTED, rundir.ERROR: message}, run_dir / rundir.SUMMARY)
            raise KeyboardInterrupt(message) from None
        except BaseException as error:
            if replica.is_main:
                try:
                    rundir.write_json({rundir.STATUS: rundir.FAILED, rundir.ERROR: f"{type(error).__name__}: {error}"},
                                      run_dir / rundir.SUMMARY)
                except rundir.RunDirError as also:          # a full disk may refuse the summary too
                    log.error("%s", also)
            raise


def _train(cfg: DictConfig, parts: Parts, run_dir: Path, checkpoint: dict[str, Any] | None,
           changes: dict[str, list[Any]], runtime: Runtime) -> dict[str, Any]:
    replica = runtime.replica
    if parts.splits.label_noise is not None and replica.is_main:
        rundir.write_json(asdict(parts.splits.label_noise), run_dir / rundir.LABEL_NOISE)
    log.info("run dir %s | device %s | precision %s | %s on %s with %s | replica %d of %d", run_dir, runtime.device,
             runtime.precision, type(parts.module).__name__, cfg.dataset.name, cfg.optimizer.name, replica.rank + 1,
             replica.world_size)
    loggers = open_loggers(cfg, run_dir, parts.config, checkpoint) if replica.is_main else Loggers([])
    triggers = CheckpointTriggers(parts.settings.checkpoint_every_n_steps, parts.settings.checkpoint_every_minutes)
    triggers.install()
    failed = True
    try:
        trainer = Trainer(parts, runtime, run_dir, loggers, triggers)
        if checkpoint is not None:
            trainer.load_state_dict(checkpoint, run_dir / rundir.LAST, changes)
            log.info("resumed %s at epoch %d, step %d", run_dir, trainer.epoch, trainer.global_step)
        try:
            summary = trainer.fit()
        except DivergedError as error:
            if replica.is_main:
                rundir.write_json(trainer.stopped_summary(rundir.DIVERGED, str(error)), run_dir / rundir.SUMMARY)
            raise
        except RunInterrupted as interruption:
            message = f"{interruption}; continue with: {continue_command(run_dir)}"
            if replica.is_main:
                rundir.write_json(trainer.stopped_summary(rundir.INTERRUPTED, message), run_dir / rundir.SUMMARY)
                print(f"flatmin: interrupted: {message}", file=sys.stderr)
            loggers.close(failed=True)
            loggers = Loggers([])
            triggers.hand_over()
        if cfg.trainer.sharpness and replica.is_main:
            with trainer.evaluation_weights():        # the model that is evaluated (Lookahead's slow weights, …)
                summary[rundir.SHARPNESS] = measure_final_model(cfg, parts, runtime)
        summary[rundir.CHOICES] = hydra_context()["choices"]
        if replica.is_main:
            rundir.write_json(summary, run_dir / rundir.SUMMARY)
        loggers.summary(summary)
        failed = False
    finally:
        triggers.restore()
        loggers.close(failed)
    return summary


def measure_final_model(cfg: DictConfig, parts: Parts, runtime: Runtime) -> dict[str, Any]:
    """``trainer.sharpness``: the measures of ``trainer.sharpness_measures`` of the trained model on the
    training split, with the task's unsmoothed loss; arrays and figures into ``<run dir>/sharpness/``. A
    failure (say, out of memory in the double backward) is logged and recorded instead of raised, so
    the run keeps its summary; ``python -m flatmin.sharpness`` can measure the checkpoint later."""
    try:
        run_dir = run_directory(cfg)
        other = None
        if "interpolation" in AnalysisOptions.from_config(cfg).names:
            other, _ = load_other(cfg.trainer.sharpness_interpolate_to, parts.module)
        return measure_run(parts.module, parts.splits, cfg, runtime.device, run_dir / rundir.SHARPNESS, other,
                           progress_bar=cfg.trainer.progress_bar)
    except Exception as error:
        log.exception("the sharpness measurement failed; the run's other results are kept")
        return {rundir.ERROR: f"{type(error).__name__}: {error}"}


def headline(summary: dict[str, Any], run_dir: Path) -> str:
    """The end-of-run line: the test metrics of the best-validation and last models (GLUE, whose test
    labels are hidden: the final validation metrics), the sharpness measured, and where the run is."""
    test = summary.get(rundir.TEST) or {}
    if test:
        parts = [f"{name} {value:.4f} ({which.replace('_', '-')} model)"
                 for which in (rundir.TEST_OF_BEST_VAL, rundir.TEST_OF_LAST)
                 for name, value in (test.get(which) or {}).items() if not name.endswith("/loss")]
    else:
        parts = [f"{name} {value:.4f} (final)" for name, value in (summary.get(rundir.FINAL) or {}).items()
                 if name.startswith("val") and not name.endswith("/loss") and isinstance(value, float)]
    sharpness = summary.get(rundir.SHARPNESS)
    if sharpness:
        parts.append("sharpness failed" if rundir.ERROR in sharpness else in_brief(sharpness))
    return f"flatmin: {summary[rundir.STATUS]}: {', '.join(parts)} | {run_dir}"


def main(cfg: DictConfig) -> float | None:
    """``train.py``'s body: run, print the headline or the reason in one sentence, exit with the
    outcome's status (``rundir.EXIT_CODES``: 2 bad input, 3 diverged), return the objective.

    In a sweep the error is raised instead of exiting, so Hydra marks this job failed and runs
    the others (each job's ``summary.json`` says what happened to it).
    """
    try:
        summary = run(cfg)
    except FlatminError as error:
        print(f"flatmin: error: {error}", file=sys.stderr)
        if hydra_context()["multirun"]:
            raise
        outcome = rundir.DIVERGED if isinstance(error, DivergedError) else "bad input"
        raise SystemExit(rundir.EXIT_CODES[outcome]) from None
    except KeyboardInterrupt as stop:
        print(f"flatmin: interrupted: {stop or 'stopped by Ctrl-C'}", file=sys.stderr)
        raise SystemExit(rundir.EXIT_CODES[rundir.INTERRUPTED]) from None
    print(headline(summary, run_directory(cfg)), file=sys.stderr)
    best = summary.get(rundir.BEST_VAL) or {}
    return best.get(cfg.trainer.monitor)
