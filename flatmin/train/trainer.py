"""The Trainer: epochs of optimizer steps, evaluation, checkpoints and logs for one job.

Per epoch it trains on every micro-batch (``Stepper`` drives ``optimizer.step(closure)``), then
evaluates on the validation split (and any extra evaluation split, e.g. MNLI mismatched) and
writes ``last.pt`` (and ``best.pt`` when the monitored metric improved) atomically. At the end it
evaluates the last and the best-validation models on the test split, when the dataset has one
with labels, and writes ``summary.json``. With ``trainer.test_every_epoch`` it also evaluates the
test split after every epoch and keeps the best such epoch (selected on test, as GAM's released
script does: only for reproducing such numbers). Resuming from ``last.pt`` restores every
generator, so on the CPU a resumed run continues bit for bit.

A batch is ``(inputs, targets)``; ``inputs`` is a tensor or a dict of tensors (a tokenised text
batch). The :class:`~flatmin.data.task.Task` says which loss to train with and which metrics
to report (accuracy; GLUE's F1, MCC, Pearson/Spearman).
"""

from __future__ import annotations

import contextlib
import logging
import math
import resource
import time
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from torch import Tensor
from torch.optim.swa_utils import SWALR, update_bn
from tqdm import tqdm

from flatmin import rundir
from flatmin.assembly import Parts
from flatmin.errors import CheckpointError, DivergedError
from flatmin.optim.averaging import WeightAveraging
from flatmin.optim.multipass import evaluation_weights, load_replica_state_dict, replica_state_dict
from flatmin.rundir import load_checkpoint, save_checkpoint
from flatmin.runtime import Runtime
from flatmin.runtime.device import device_name
from flatmin.runtime.distributed import barrier, gather_objects, on_any_replica
from flatmin.step import group_size
from flatmin.train.checkpoint_triggers import CheckpointTriggers, RunInterrupted
from flatmin.train.loggers import Loggers
from flatmin.train.seeding import rng_state, set_rng_state

log = logging.getLogger(__name__)


@dataclass
class EpochProgress:
    """Where a training epoch is: micro-batches done, the sums of the loss and of the correct
    predictions (over the epoch, and over the open log window), and the time it has taken. A
    mid-epoch checkpoint carries it, so a resumed epoch continues the same sums."""

    batches: int
    totals: Tensor                       # loss sum, correct (float64, on the device)
    total_count: int
    window: Tensor
    window_count: int
    time_s: float

    @classmethod
    def fresh(cls, device: torch.device) -> EpochProgress:
        zeros = lambda: torch.zeros(2, dtype=torch.float64, device=device)  # noqa: E731
        return cls(0, zeros(), 0, zeros(), 0, 0.0)

    def close_window(self) -> None:
        """Add the log window's sums to the epoch's and start a new window."""
        self.totals += self.window
        self.total_count += self.window_count
        self.window.zero_()
        self.window_count = 0

    def state_dict(self) -> dict[str, Any]:
        return {"batches": self.batches, "totals": self.totals.cpu(), "total_count": self.total_count,
                "window": self.window.cpu(), "window_count": self.window_count, "time_s": self.time_s}

    @classmethod
    def from_state(cls, state: dict[str, Any], device: torch.device) -> EpochProgress:
        return cls(state["batches"], state["totals"].to(device), state["total_count"], state["window"].to(device),
                   state["window_count"], state["time_s"])


class Trainer:
    """Trains a run's :class:`~flatmin.assembly.Parts` as its typed settings (``parts.settings``) say.

    After every optimizer step the LR schedule steps, then the hyperparameter schedule (the method's
    scheduled hyperparameters, e.g. NSO's sigma, which may follow the new learning rate). With an SWA
    schedule (SWA's ``swa_lr``) the LR schedule gives way, after the averaging's start, to
    ``SWALR``, stepped once per epoch. ``triggers`` decide mid-epoch checkpoints and stops (signals).

    Everything evaluated (validation, the extra splits, the per-epoch and final tests) and ``best.pt``
    are the optimizer's evaluation weights (:meth:`evaluation_weights`: Lookahead's slow weights, a
    weight average); ``last.pt`` holds the training weights, from which a resume continues.
    """

    def __init__(self, parts: Parts, runtime: Runtime, run_dir: Path, loggers: Loggers,
                 triggers: CheckpointTriggers | None = None) -> None:
        settings = parts.settings
        self.settings = settings
        self.stepper = parts.stepper
        self.model = parts.model            # what runs forward (maybe compiled and/or DDP-wrapped)
        self.module = parts.module          # the user's module, for weights and checkpoints
        self.optimizer = parts.optimizer
        self.scheduler = parts.lr_schedule
        self.hyper_schedule = parts.hyper_schedule
        self.swa_schedule = parts.swa_schedule
        self.swalr: SWALR | None = None     # built at the switch (an LR scheduler sets the LR when built)
        self.loaders = parts.loaders
        self.task = parts.task
        self.config = parts.config
        self.runtime = runtime
        self.replica = runtime.replica
        self.device = runtime.device
        self.run_dir = run_dir
        self.loggers = loggers
        self.micro_batches = settings.micro_batches_per_epoch(len(self.loaders.train))
        self.epoch = 0
        self.global_step = 0
        self.samples_seen = 0
        self.train_time_s = 0.0
        self.elapsed_s = 0.0
        self.last_record: dict[str, Any] = {}
        self.best: dict[str, Any] | None = None
        self.best_test: dict[str, Any] | None = None   # trainer.test_every_epoch: the best epoch on test
        self.initial_loss: float | None = None          # the first step's, for trainer.divergence_threshold
        self.progress: EpochProgress | None = None      # a mid-epoch checkpoint's, until its epoch resumes
        self.resumes: list[dict[str, Any]] = []         # where the run was resumed, and what changed then
        self.budget_stop: dict[str, Any] | None = None  # where trainer.budget_seconds ran out
        self.triggers = triggers or CheckpointTriggers(settings.checkpoint_every_n_steps,
                                                       settings.checkpoint_every_minutes)
        self._started, self._elapsed_before = time.perf_counter(), 0.0
        self.test_every_epoch = settings.test_every_epoch and self.loaders.test is not None  # a test split's
        if settings.test_every_epoch and not self.test_every_epoch:
            log.warning("trainer.test_every_epoch is set but the dataset has no labelled test split: skipped")

    # -- the loop ----------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train the remaining epochs, test, and return the summary of the whole run."""
        self._started = time.perf_counter()
        self._elapsed_before = self.elapsed_s
        self._switch_to_swalr_if_due()
        last_epoch = self.settings.epochs if self.budget_stop is None else self.epoch
        for epoch in range(self.epoch, last_epoch):
            train = self.train_epoch(epoch)
            if self.swalr is not None:
                self.swalr.step()                # SWALR moves once per epoch (torch's SWA example)
            with self.evaluation_weights(epoch):  # what is evaluated and saved as best.pt: Lookahead's slow
                val = self.evaluate(self.loaders.val, "val") if self.loaders.val is not None else {}  # weights, …
                for prefix, loader in self.loaders.extra_val.items():
                    val.update(self.evaluate(loader, prefix))
                test = self._test_epoch() if self.test_every_epoch else {}
                self.epoch = epoch + 1
                record = {"event": "epoch", "step": self.global_step, "epoch": self.epoch,
                          rundir.PASSES: self.stepper.passes, rundir.TRAIN_TIME: self.train_time_s,
                          **train, **val, **test}
                self.last_record = record
                self.loggers.log(record)
                log.info("epoch %d/%d %s", self.epoch, self.settings.epochs, _format(record))
                if test and self._improved(test, self.best_test, monitored_on_test(self.settings.monitor)):
                    self.best_test = {"epoch": self.epoch, **test}
                if self._improved(record, self.best, self.settings.monitor):
                    self.best = record
                    if self.replica.is_main:
                        save_checkpoint({"epoch": self.epoch, "model": self.module.state_dict(), "record": record},
                                        self.run_dir / rundir.BEST)
            self._save_last()                     # the training weights: a resume continues from them
            if self.budget_stop is not None:
                break
            stop = self.triggers.decide(self.global_step, self.replica, self.device)[0]
            if stop and self.epoch < self.settings.epochs:
                raise RunInterrupted(self.triggers.signal_name, self.epoch, self.global_step)
        barrier(self.replica)               # best.pt is written before any replica reads it
        summary = self._summarise(self._test())
        summary["wall_time_s"] = self._elapsed_before + time.perf_counter() - self._started
        return summary

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training split (from where a mid-epoch checkpoint left it); returns its
        mean loss and, for classification, accuracy (of the first passes).

        After every optimizer step but the epoch's last, a stop request (a signal) or a due periodic
        checkpoint writes a mid-epoch checkpoint; a stop then raises :class:`RunInterrupted`. With
        ``trainer.budget_seconds``, the step at which the training seconds reach it ends the epoch
        and the run (``budget_stop``)."""
        settings = self.settings
        self.model.train()
        progress = self.progress or EpochProgress.fresh(self.device)      # resumed mid-epoch, or a new epoch
        self.progress = None
        self.loaders.train.sampler.set_epoch(epoch, skip_batches=progress.batches)
        window_start = epoch_start = time.perf_counter()
        with torch.random.fork_rng(devices=[]):      # a DataLoader draws its base seed from the generator,
            iterator = iter(self.loaders.train)      # which a resumed epoch would draw at another point
        batches = islice(iterator, self.micro_batches - progress.batches)
        bar = tqdm(batches, total=self.micro_batches, initial=progress.batches,
                   desc=f"epoch {epoch + 1}/{settings.epochs}", disable=None if settings.progress_bar else True,
                   leave=False, dynamic_ncols=True)
        accumulate, log_every = settings.accumulate_grad_batches, settings.log_every_n_steps
        out_of_budget = False
        for index, (inputs, targets) in enumerate(bar, start=progress.batches):
            inputs, targets = self.runtime.to_device(inputs), targets.to(self.device, non_blocking=True)
            loss, outputs, ended = self.stepper.step(inputs, targets, group_size(index, accumulate, self.micro_batches))
            if self.initial_loss is None:
                self.initial_loss = loss.item()
            progress.window += torch.stack([loss.double() * len(targets),
                                            self.task.count_correct(outputs, targets).double()])
            progress.window_count += len(targets)
            if not ended:
                continue
            if self.swalr is None:
                self.scheduler.step()
            self.hyper_schedule.step()
            self.global_step += 1
            self._switch_to_swalr_if_due()
            if self.global_step % log_every == 0:
                loss_sum, correct = progress.window.tolist()
                self._check_divergence(loss_sum / progress.window_count, epoch)
                now = time.perf_counter()
                record = {"event": "step", "step": self.global_step, "epoch": epoch + 1,
                          **self._train_metrics(loss_sum, correct, progress.window_count),
                          "lr": self.optimizer.param_groups[0]["lr"],
                          "samples_per_s": progress.window_count / (now - window_start)}
                self.loggers.log(record)
                bar.set_postfix({name.removeprefix("train/"): f"{record[name]:.4f}"
                                 for name in ("train/loss", "train/accuracy", "samples_per_s") if name in record})
                progress.close_window()
                window_start = now
            if settings.budget_seconds is not None:
                spent = self.train_time_s + progress.time_s + time.perf_counter() - epoch_start
                (out_of_budget,) = on_any_replica([spent >= settings.budget_seconds], self.replica, self.device)
                if out_of_budget:
                    break
            if index + 1 < self.micro_batches:
                stop, checkpoint = self.triggers.decide(self.global_step, self.replica, self.device)
                if checkpoint:
                    progress.batches, progress.time_s = index + 1, progress.time_s + time.perf_counter() - epoch_start
                    epoch_start = time.perf_counter()
                    self._save_last(progress)
                if stop:
                    raise RunInterrupted(self.triggers.signal_name, epoch + 1, self.global_step)
        progress.close_window()
        total_count = progress.total_count
        self.samples_seen += total_count
        loss_sum, correct = progress.totals.tolist()
        self._check_divergence(loss_sum / max(total_count, 1), epoch)
        epoch_time = progress.time_s + time.perf_counter() - epoch_start
        self.train_time_s += epoch_time
        if out_of_budget:
            self.budget_stop = {"reason": "budget_seconds", "epoch": epoch + 1, "step": self.global_step,
                                rundir.TRAIN_TIME: self.train_time_s}
        return {**self._train_metrics(loss_sum, correct, total_count),
                "lr": self.optimizer.param_groups[0]["lr"], "epoch_time_s": epoch_time}

    def _save_last(self, progress: EpochProgress | None = None) -> None:
        """Write ``last.pt``: at an epoch's end, or mid-epoch with ``progress`` (where in the epoch,
        and its metric sums so far)."""
        self.elapsed_s = self._elapsed_before + time.perf_counter() - self._started
        state = self.state_dict()       # on every replica: it gathers their random generators
        if progress is not None:
            state["progress"] = progress.state_dict()
        if self.replica.is_main:
            save_checkpoint(state, self.run_dir / rundir.LAST)
        self.triggers.checkpointed()

    @contextlib.contextmanager
    def evaluation_weights(self, epoch: int | None = None) -> Iterator[None]:
        """The optimizer's evaluation weights in the model (``docs/optimizers.md``, "Evaluation weights"),
        with BatchNorm statistics recomputed for them when the optimizer asks (SWA:
        ``torch.optim.swa_utils.update_bn`` over the training split in epoch ``epoch``'s order, the
        last trained one by default); the training weights and statistics are back on exit."""
        with evaluation_weights(self.optimizer):
            if getattr(self.optimizer, "needs_batchnorm_update", False):
                self._update_batchnorm(self.epoch - 1 if epoch is None else epoch)
            yield

    def _update_batchnorm(self, epoch: int) -> None:
        """``update_bn`` over the epoch's training micro-batches, on the run's device. Iterating the loader
        draws from torch's generator (a DataLoader's base seed, augmentation), so the generator is forked
        and the run trains as without; the sampler is set to the whole epoch (a resumed one may skip)."""
        sampler = self.loaders.train.sampler
        sampler.set_epoch(max(epoch, 0))
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            inputs = (self.runtime.to_device(batch_inputs)
                      for batch_inputs, _ in islice(self.loaders.train, self.micro_batches))
            with self.runtime.precision.autocast():
                update_bn(inputs, self.module)

    def _switch_to_swalr_if_due(self) -> None:
        """Leave the run's LR schedule for SWALR once the averaging has passed its start (SWA's ``swa_lr``)."""
        optimizer = self.optimizer
        if (self.swa_schedule is not None and self.swalr is None and isinstance(optimizer, WeightAveraging)
                and optimizer.base_steps >= optimizer.start):
            self.swalr = self.swa_schedule.build(optimizer)
            log.info("step %d: the LR schedule switches to SWALR (swa_lr %g)", self.global_step,
                     self.swa_schedule.swa_lr)

    @torch.no_grad()
    def evaluate(self, loader: Iterable, prefix: str) -> dict[str, float]:
        """Mean loss (without label smoothing) and the task's metrics on ``loader``, model in eval mode.

        Predictions and targets stay on the device until the split is done, then go to the host
        once for the metrics.
        """
        self.model.eval()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        predictions, targets = [], []
        for inputs, batch_targets in islice(loader, self.settings.limit_eval_batches):
            batch_targets = batch_targets.to(self.device, non_blocking=True)
            with self.runtime.precision.autocast():
                outputs = self.model(self.runtime.to_device(inputs))
            loss_sum += self.task.summed_loss(outputs, batch_targets).double()
            predictions.append(self.task.predict(outputs))
            targets.append(batch_targets)
        self.model.train()
        target_array = torch.cat(targets).cpu().numpy()
        metrics = self.task.score(torch.cat(predictions).cpu().numpy(), target_array)
        return {f"{prefix}/loss": loss_sum.item() / len(target_array),
                **{f"{prefix}/{name}": value for name, value in metrics.items()}}

    # -- helpers -----------------------------------------------------------------------------
    def _check_divergence(self, loss: float, epoch: int) -> None:
        """Stop the run when the training loss (a log window's or the epoch's mean) is not finite, or
        exceeds ``trainer.divergence_threshold`` times the loss of the run's first step (the model as
        initialised: ln C for C classes from scratch), which a run that blew up without reaching
        inf (a loss of 1e14 at a huge learning rate) passes and a healthy one never nears."""
        threshold, initial = self.settings.divergence_threshold, self.initial_loss
        if math.isfinite(loss) and not (threshold and initial and loss > threshold * initial):
            return
        reason = "is not finite" if not math.isfinite(loss) else \
            f"exceeds {threshold:g} × the first step's ({initial:.4g}: trainer.divergence_threshold)"
        raise DivergedError(f"The run diverged: the training loss was {loss:.4g} at epoch {epoch + 1}, step "
                            f"{self.global_step}, which {reason}; lower the learning rate (or the method's radius).")

    def device_record(self) -> dict[str, str]:
        return {rundir.DEVICE: str(self.device), rundir.DEVICE_NAME: device_name(self.device)}

    def stopped_summary(self, status: str, error: str) -> dict[str, Any]:
        """``summary.json`` of a run stopped before its end: the status and the reason, how far it got,
        and what it had logged (no test: the run has no final model)."""
        return {rundir.STATUS: status, rundir.ERROR: error, "epochs": self.epoch, "global_steps": self.global_step,
                rundir.FINAL: self.last_record, rundir.BEST_VAL: self.best, rundir.RESUMES: self.resumes,
                **self.device_record(), "precision": self.runtime.precision.name}


    def _train_metrics(self, loss_sum: float, correct: float, count: int) -> dict[str, float]:
        """Mean training loss, and accuracy for classification."""
        metrics = {"train/loss": loss_sum / count}
        if not self.task.regression:
            metrics["train/accuracy"] = correct / count
        return metrics

    def _improved(self, record: dict[str, Any], best: dict[str, Any] | None, key: str) -> bool:
        """Whether ``record`` beats ``best`` on ``key`` in ``trainer.monitor_mode`` (always when
        ``record`` lacks the key, i.e. without val, when there is no best yet, or when the best is
        NaN: a correlation of constant predictions)."""
        if key not in record or best is None or math.isnan(best[key]):
            return True
        if self.settings.monitor_mode == "max":
            return record[key] > best[key]
        return record[key] < best[key]

    def _test_epoch(self) -> dict[str, float]:
        """This epoch's test metrics (``trainer.test_every_epoch``). Iterating a DataLoader draws its
        base seed from torch's generator, so the generator is forked: the run trains as without."""
        with torch.random.fork_rng(devices=[]):
            return self.evaluate(self.loaders.test, "test")

    def _test(self) -> dict[str, dict[str, float]]:
        """Test metrics of the last model and of the best-validation model (from ``best.pt``); none
        when the dataset has no labelled test split (GLUE). Without a validation split there is no
        best-validation model (``best.pt`` is the final one), so only the last model's are given."""
        if self.loaders.test is None:
            return {}
        with self.evaluation_weights():
            results = {rundir.TEST_OF_LAST: self.evaluate(self.loaders.test, "test")}
        if getattr(self.optimizer, "evaluated", None) is not None:   # and the training weights, labelled
            results[rundir.LAST_TRAINING_WEIGHTS] = self.evaluate(self.loaders.test, "test")
        if self.loaders.val is None:
            return results
        last_weights = {k: v.clone() for k, v in self.module.state_dict().items()}
        best = load_checkpoint(self.run_dir / rundir.BEST, required=("model",))
        self.module.load_state_dict(best["model"])
        results[rundir.TEST_OF_BEST_VAL] = self.evaluate(self.loaders.test, "test")
        self.module.load_state_dict(last_weights)
        return results

    def _summarise(self, test: dict[str, dict[str, float]]) -> dict[str, Any]:
        memory = {"cpu_max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        if self.device.type == "cuda":
            memory["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        micro_steps = max(1, self.stepper.micro_steps)
        best_test = {rundir.BEST_TEST: self.best_test} if self.best_test is not None else {}
        evaluated = getattr(self.optimizer, "evaluated", None)
        return {
            rundir.STATUS: rundir.COMPLETED,
            **({rundir.EVALUATED: evaluated} if evaluated is not None else {}),
            "epochs": self.epoch,
            "global_steps": self.global_step,
            rundir.FINAL: self.last_record,
            rundir.BEST_VAL: self.best,
            rundir.TEST: test,
            **best_test,
            **({rundir.RESUMES: self.resumes} if self.resumes else {}),
            **({rundir.BUDGET_STOP: self.budget_stop} if self.budget_stop is not None else {}),
            "passes_per_step": self.stepper.passes / micro_steps,
            **({"forward_only_passes_per_step": self.stepper.forward_only_passes / micro_steps}
               if self.stepper.forward_only_passes else {}),
            "train_time_s": self.train_time_s,
            "samples_per_s": self.samples_seen / max(self.train_time_s, 1e-9),
            "peak_memory_mb": memory,
            **self.device_record(),
            "precision": self.runtime.precision.name,
        }

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the run exactly: weights, optimizer, schedule, scaler, RNG."""
        return {
            "epoch": self.epoch,
            "global_step": self.global_step,
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "swa_scheduler": self.swalr.state_dict() if self.swalr is not None else None,
            "hyper_schedule": self.hyper_schedule.state_dict(),
            "stepper": self.stepper.state_dict(),
            "rng": gather_objects(rng_state(), self.replica),   # one entry per replica
            **({"replica_optimizer_state": gather_objects(replica_state_dict(self.optimizer), self.replica)}
               if self.replica.distributed else {}),            # the method state each replica built itself
            "trainer": {"best": self.best, "best_test": self.best_test, "last_record": self.last_record,
                        "samples_seen": self.samples_seen, "train_time_s": self.train_time_s,
                        "elapsed_s": self.elapsed_s, "wandb_run_id": self.loggers.wandb_run_id,
                        "initial_loss": self.initial_loss, "resumes": self.resumes,
                        "budget_stop": self.budget_stop},
            "config": self.config,
        }

    def load_state_dict(self, state: dict[str, Any], source: Path, changes: dict[str, list[Any]] | None = None) -> None:
        """Continue from a checkpoint made by :meth:`state_dict` (at an epoch's end or mid-epoch); a
        mismatch is a ``CheckpointError``. ``changes`` (settings the resume changes, accepted) are
        recorded and take effect: what the checkpoint would bring back of them is set anew
        (:meth:`_apply_accepted`); everything else the run built from its new config already."""
        built_groups = [{key: value for key, value in group.items() if key != "params"}
                        for group in self.optimizer.param_groups]        # from the new config, before the load
        if state.get("swa_scheduler") is not None and self.swalr is None:
            if self.swa_schedule is None:
                raise CheckpointError(f"Checkpoint {source} had switched to SWALR (optimizer.averaging.swa_lr) and "
                                      "this run has no SWA LR schedule; resume with the config it was made with.")
            self.swalr = self.swa_schedule.build(self.optimizer)   # before the optimizer's state: it restores the LR
        try:
            self.module.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, KeyError, ValueError) as error:
            reason = str(error).splitlines()[0]
            raise CheckpointError(f"Checkpoint {source} does not fit this model and optimizer ({reason}); resume "
                                  "with the config it was made with.") from error
        replica_states = state.get("replica_optimizer_state")
        if replica_states is not None and replica_states[0] is not None:
            load_replica_state_dict(self.optimizer, replica_states[self.replica.rank % len(replica_states)])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.swalr is not None:
            self.swalr.load_state_dict(state["swa_scheduler"])
        self._apply_accepted(changes or {}, built_groups)
        self.hyper_schedule.load_state_dict(state["hyper_schedule"])
        self.stepper.load_state_dict(state["stepper"])
        self.epoch, self.global_step = state["epoch"], state["global_step"]
        trainer = state["trainer"]
        self.best, self.last_record = trainer["best"], trainer["last_record"]
        self.best_test = trainer.get("best_test")      # absent from checkpoints made before the option
        self.initial_loss = trainer.get("initial_loss")   # absent before it was kept: the resumed step's then
        self.budget_stop = trainer.get("budget_stop")     # a spent budget stays spent
        progress = state.get("progress")
        self.progress = EpochProgress.from_state(progress, self.device) if progress else None
        self.resumes = [*trainer.get("resumes", []), {"epoch": self.epoch, "step": state["global_step"],
                                                      "batch_in_epoch": progress["batches"] if progress else 0,
                                                      "changes": changes or {}}]
        self.samples_seen, self.train_time_s = trainer["samples_seen"], trainer["train_time_s"]
        self.elapsed_s = trainer["elapsed_s"]
        set_rng_state(state["rng"][self.replica.rank % len(state["rng"])])


    def _apply_accepted(self, changes: dict[str, list[Any]], built_groups: list[dict[str, Any]]) -> None:
        """Accepted changes of ``optimizer.<key>`` where ``<key>`` is a param-group value (lr, momentum,
        weight_decay, betas, a method's hyperparameter): the checkpoint's optimizer state brought back
        the old values; the new config's, as the build put them in each group, are set again. A new
        ``lr`` becomes the LR schedule's base, with the schedule's factor at the resumed step."""
        keys = {key.removeprefix("optimizer.") for key in changes if key.startswith("optimizer.")}
        groups = self.optimizer.param_groups
        for group, built in zip(groups, built_groups):
            group.update({key: built[key] for key in keys & built.keys() - {"lr", "initial_lr"}})
        if "lr" not in keys:       # (a checkpoint whose LR is SWALR's refuses a new lr: run.changes_on_resume)
            return
        self.scheduler.base_lrs = [built["initial_lr"] for built in built_groups]
        for group, base, factor in zip(groups, self.scheduler.base_lrs, self.scheduler.lr_lambdas):
            group["initial_lr"], group["lr"] = base, base * factor(self.scheduler.last_epoch)
        self.scheduler._last_lr = [group["lr"] for group in groups]


def monitored_on_test(monitor: str) -> str:
    """The test counterpart of ``trainer.monitor``: ``val/accuracy`` → ``test/accuracy``."""
    return "test/" + monitor.split("/", 1)[-1]


def _format(record: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in record.items() if isinstance(v, float))
