"""What makes a run write ``last.pt`` mid-epoch: a periodic checkpoint falling due
(``trainer.checkpoint_every_n_steps``, ``trainer.checkpoint_every_minutes``), or a request to stop:
SIGTERM (SLURM, ``kill``), SIGINT (Ctrl-C), SIGUSR1 and SIGUSR2 (submitit's preemption signal),
after which the run stops.

The first such signal only records the request; the trainer finishes the optimizer step it is in,
writes a checkpoint (mid-epoch when need be) and ``summary.json`` with status ``interrupted``,
prints where to resume from, and then hands the signal on: to the handler that was there before
(submitit's, which requeues the job and exits), or exits with ``EXIT_CODES["interrupted"]``. A
second Ctrl-C stops at once. Replicas of a DDP job agree on the step they stop at (one all-reduce
of the request per step, together with the periodic-checkpoint decision).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType
from typing import Any, Callable

import torch

from flatmin import rundir
from flatmin.runtime.distributed import Replica, on_any_replica

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)


class RunInterrupted(BaseException):
    """A stop was asked for and the run's state is saved. Not an ``Exception``: Hydra's launchers
    let it through, so a sweep stops with its job."""

    def __init__(self, signal_name: str, epoch: int, step: int) -> None:
        super().__init__(f"stopped by {signal_name} at epoch {epoch}, step {step}")
        self.signal_name = signal_name


class SecondCtrlC(KeyboardInterrupt):
    """A second Ctrl-C while the first one's stop is under way: stop at once."""


class CheckpointTriggers:
    """The periodic mid-epoch checkpoints (every ``every_steps`` optimizer steps and/or
    ``every_minutes``) and the stop requests from signals, decided together once per step."""

    def __init__(self, every_steps: int | None = None, every_minutes: float | None = None) -> None:
        self.every_steps = every_steps
        self.every_seconds = every_minutes * 60 if every_minutes else None
        self.signal: int | None = None
        self.previous: dict[int, Any] = {}
        self.last_checkpoint = time.monotonic()

    def install(self) -> None:
        """Catch the stop signals (only the main thread may)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for number in STOP_SIGNALS:
            self.previous[number] = signal.getsignal(number)
            signal.signal(number, self._record)

    def restore(self) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        self.previous = {}

    def _record(self, number: int, frame: FrameType | None) -> None:
        if self.signal == signal.SIGINT and number == signal.SIGINT:
            raise SecondCtrlC
        if self.signal is None:
            self.signal = number
            log.warning("%s: the run stops after this step, with a checkpoint (Ctrl-C again stops at once)",
                        signal.Signals(number).name)

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signal).name if self.signal is not None else "nothing"

    def decide(self, global_step: int, replica: Replica, device: torch.device) -> tuple[bool, bool]:
        """After an optimizer step: (stop now, write a checkpoint now), the same on every replica."""
        stop = self.signal is not None
        due = bool(self.every_steps and global_step % self.every_steps == 0) or \
            bool(self.every_seconds and time.monotonic() - self.last_checkpoint >= self.every_seconds)
        stop, due = on_any_replica([stop, due], replica, device)
        return stop, due or stop

    def checkpointed(self) -> None:
        self.last_checkpoint = time.monotonic()

    def hand_over(self) -> None:
        """After the interrupted run's state is saved: pass the signal to the handler that was there
        before (submitit's requeues the job), else exit with the interrupted status."""
        previous = self.previous.get(self.signal) if self.signal is not None else None
        self.restore()
        if callable(previous) and previous is not signal.default_int_handler:
            handler: Callable[[int, FrameType | None], Any] = previous
            handler(self.signal, None)
        raise SystemExit(rundir.EXIT_CODES[rundir.INTERRUPTED])
