"""Time to target: how much training a run took until its evaluations first reached a value.

The reading is the first ``"event": "epoch"`` record (in file order; step records are not
evaluations) whose metric is a finite number at or beyond the target, in one of four units: the
record's ``epoch``, ``step``, ``passes`` (gradient passes so far, every closure call) or
``train_time_s`` (training seconds so far, evaluation excluded). A run that did not complete (failed,
diverged, interrupted, or unfinished without a ``summary.json``) never reaches the target, whatever
its records hold: AlgoPerf's scoring counts such a trial as infinitely slow
(mlcommons/algorithmic-efficiency, ``scoring/performance_profile.py``), and so does flatmin.

Records written before epoch records carried ``passes`` and ``train_time_s``: passes are ``step ×
trainer.accumulate_grad_batches × summary passes_per_step`` (a run directory's only), seconds the sum
of ``epoch_time_s`` up to the record.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from flatmin import rundir
from flatmin.checks import is_number
from flatmin.report.runs import read_run

UNITS = ("epochs", "steps", "passes", "seconds")
#: The record key each unit reads.
READING = {"epochs": "epoch", "steps": "step", "passes": rundir.PASSES, "seconds": rundir.TRAIN_TIME}


def time_to_target(source: str | os.PathLike | Iterable[Mapping[str, Any]], metric: str, target: float,
                   mode: str = "auto", unit: str = "epochs") -> float:
    """The ``unit`` reading of the first evaluation of ``metric`` at or beyond ``target`` (``>=`` for
    ``max``, ``<=`` for ``min``; ``auto``: ``min`` for a loss), ``math.inf`` when none reaches it.
    ``source`` is a run directory or an iterable of ``metrics.jsonl`` records."""
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {', '.join(UNITS)} (got {unit!r}).")
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be auto, min or max (got {mode!r}).")
    run = read_run(Path(source)) if isinstance(source, (str, os.PathLike)) else None
    if run is not None and run.status != rundir.COMPLETED:
        return math.inf
    records = run.epoch_records() if run is not None else [r for r in source if r.get("event") == "epoch"]
    better_low = rundir.monitor_mode(metric, mode) == "min"
    seconds = 0.0
    for record in records:
        seconds += record.get("epoch_time_s", 0.0)
        value = record.get(metric)
        if not is_number(value) or (value > target if better_low else value < target):
            continue
        if READING[unit] in record:
            return float(record[READING[unit]])
        if unit == "seconds":
            return seconds
        if run is None:
            raise ValueError(f"the records carry no {rundir.PASSES!r} (written before flatmin recorded it): give "
                             "the run directory, whose summary and config give the passes per step.")
        # micro-batches per optimizer step × passes per micro-batch (summary.json's passes_per_step)
        accumulate = run.config.get("trainer.accumulate_grad_batches", 1)
        return float(record["step"] * accumulate * run.summary["passes_per_step"])
    return math.inf
