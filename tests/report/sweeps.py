"""Synthetic tuning sweeps: trial run directories as ``flatmin.train.run`` writes them for a job of
``sweep=algoperf``, ``sweep=crowded_valley`` or ``sweep=crowded_valley_reseed``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from tests.report.conftest import completed, write_run

#: Accuracies that reach a 0.9 target at epoch k (index k - 1), and that never do.
AT = {k: [0.5] * (k - 1) + [0.9] for k in range(1, 6)}
NEVER = [0.5, 0.6, 0.7]


def epochs(accuracies: Sequence[float | None], passes: float = 100, seconds: float = 1.0) -> list[dict[str, Any]]:
    """Epoch records reaching ``accuracies`` in turn, each epoch ``passes`` gradient passes and ``seconds``
    training seconds long (10 steps)."""
    return [{"epoch": epoch, "step": 10 * epoch, "passes": passes * epoch, "train_time_s": seconds * epoch,
             "epoch_time_s": seconds, "val/accuracy": accuracy, "train/loss": 1.0 / epoch}
            for epoch, accuracy in enumerate(accuracies, 1)]


def write_trial(path: Path, base: dict[str, Any], accuracies: Sequence[float | None] = (0.5, 0.9), *,
                method: str = "sgd", protocol: str = "algoperf", phase: str = "tune", study: int | None = 0,
                trial: int | None = 0, reseed: int | None = None, seed: int = 0, trials: int = 2, studies: int = 1,
                point: dict[str, float] | None = None, status: str | None = "completed", test: float = 0.8,
                target: float | None = 0.9, passes: float = 100, seconds: float = 1.0, device: str = "cpu",
                device_name: str | None = None, workload: str | None = None, settings: dict[str, Any] | None = None) -> Path:
    """One trial: its config's ``tuning`` block and point, a summary of ``status`` (None: unfinished) whose
    final validation accuracy is the last of ``accuracies`` and final test accuracy ``test``, its records."""
    point = {"optimizer.lr": 0.1} if point is None else point
    tuning = {"protocol": protocol, "phase": phase, "trials": trials, "studies": studies, "seed": 0, "study": study,
              "trial": trial, "reseeds": 3, "reseed": reseed, "from": None, "target.metric": "val/accuracy",
              "target.value": target, "workload": workload}
    config = {"seed": seed, "optimizer.name": method, **point, **(settings or {}),
              **{f"tuning.{key}": value for key, value in tuning.items()},
              **{f"tuning.point.{key}": value for key, value in point.items()}}
    summary = None
    if status is not None:
        summary = {**completed(test, accuracies[-1]), "status": status, "device": device, "passes_per_step": 10.0,
                   **({"device_name": device_name} if device_name else {})}
        if status != "completed":
            summary["error"] = f"the run {status}"
    return write_run(path, base, config, {"optimizer": method}, summary, epochs(accuracies, passes, seconds))
