"""Schedules of a method's hyperparameters: one mechanism for every method and every key.

The papers change some hyperparameters during training: NSO's sigma grows over the epochs
(constant, linear from 0, or exponential from 1e-5), and GSAM/GAM keep rho proportional to the
learning rate. ``optimizer.schedules`` maps a hyperparameter of the method (a key of its param
groups: ``rho``, ``rho_p``, ``sigma``, …) to one of the kinds below; the configured value of that
key is the target. Every optimizer step, right after the LR scheduler, :class:`HyperparameterSchedule`
writes the scheduled value into every param group:

============================  =====================================================================
``constant``                  the configured value
``linear``                    0 → value: ``value · p``
``exp``                       1e-5 → value, geometric: ``1e-5 · (value/1e-5)^p``
``proportional_to_lr``        ``floor + (value − floor) · (lr_t − lr_min) / (lr_0 − lr_min)``
============================  =====================================================================

``p`` is the progress through training, 0 at the first optimizer step and 1 at the last. The
schedule's step count is checkpointed, so a resumed run sees the same values.

``proportional_to_lr`` is GSAM's rho schedule (Zhuang et al., ICLR 2022, Algorithm 1, step 0;
juntang-zhuang/GSAM@a770275 ``gsam/scheduler.py`` ``ProportionScheduler``; big_vision@0127fb6
``big_vision/trainers/proj/gsam/gsam.py`` ``gsam_gradient``): the value moves linearly with each
group's learning rate, from ``value`` at ``lr_0`` (the group's initial LR) to ``floor`` at
``lr_min`` (where the LR schedule ends: ``min_lr_factor · lr_0`` for cosine), and is ``value``
when ``lr_0 == lr_min``. The floor of ``rho`` is ``optimizer.rho_min`` (GSAM's rho_min), 0 by
default; with floor 0 and ``lr_min = 0`` this is ``value · lr_t / lr_0``, bit for bit. As in both
releases the line is not clamped: during a warmup whose LR starts below ``lr_min`` the value is
below ``floor`` (below 0 when the floor is 0, for the first few steps).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch.optim import Optimizer
KINDS = ("constant", "linear", "exp", "proportional_to_lr")

#: Where the ``exp`` kind starts.
EXP_START = 1e-5


def scheduled_value(kind: str, target: float, progress: float, lr: float, lr_max: float, lr_min: float = 0.0,
                    floor: float = 0.0) -> float:
    """The value of a hyperparameter whose configured value is ``target``, under ``kind``, at
    ``progress`` through training and learning rate ``lr`` (``lr_max`` the initial one, ``lr_min``
    where the LR schedule ends; ``floor`` the value at ``lr_min``, for ``proportional_to_lr``)."""
    if kind == "linear":
        return target * progress
    if kind == "exp":
        return EXP_START * (target / EXP_START) ** progress
    if kind == "proportional_to_lr":
        if lr_max == lr_min:
            return target
        return floor + (target - floor) * ((lr - lr_min) / (lr_max - lr_min))
    return target


class HyperparameterSchedule:
    """Writes scheduled hyperparameters into ``optimizer``'s param groups, once per optimizer step.

    ``kinds`` maps param-group keys to schedule kinds (``KINDS``); ``total_steps`` is the number of
    optimizer steps of the whole run. Build it after the LR scheduler (``lr_0`` is a group's
    ``initial_lr`` when an LR scheduler set one): it writes the values of step 0 at once.
    For ``proportional_to_lr``: ``floors`` maps a key to its value at ``lr_min`` (0 if absent) and
    ``final_lr_factor`` is ``lr_min / lr_0``, where the LR schedule ends (0 if not told). With
    ``steps_per_epoch`` the progress moves once per epoch, ``epoch / (epochs − 1)`` (the NSO
    release's ``np.linspace(0, sigma, epochs)[epoch]``), instead of every step.
    """

    def __init__(self, optimizer: Optimizer, kinds: Mapping[str, str], total_steps: int,
                 floors: Mapping[str, float] | None = None, final_lr_factor: float = 0.0,
                 steps_per_epoch: int | None = None) -> None:
        unknown = set(kinds.values()) - set(KINDS)
        if unknown:
            raise ValueError(f"schedule kinds must be among {', '.join(KINDS)}, got {', '.join(sorted(unknown))}")
        self.optimizer = optimizer
        self.kinds = dict(kinds)
        self.total_steps = total_steps
        self.floors = dict(floors or {})
        self.final_lr_factor = final_lr_factor
        self.steps_per_epoch = steps_per_epoch
        self.targets = [{key: group[key] for key in self.kinds} for group in optimizer.param_groups]
        self.initial_lrs = [group.get("initial_lr", group["lr"]) for group in optimizer.param_groups]
        self.steps = 0
        self._apply()

    def step(self) -> None:
        """Advance one optimizer step (call it right after the LR scheduler's ``step``)."""
        self.steps += 1
        self._apply()

    def progress(self) -> float:
        """How far through training the next step is: 0 at the first, 1 at the last (step or epoch)."""
        if self.steps_per_epoch:
            epochs = max(1, self.total_steps // self.steps_per_epoch)
            return min(1.0, (self.steps // self.steps_per_epoch) / max(1, epochs - 1))
        return min(1.0, self.steps / max(1, self.total_steps - 1))

    def _apply(self) -> None:
        progress = self.progress()
        for group, targets, initial_lr in zip(self.optimizer.param_groups, self.targets, self.initial_lrs):
            lr_min = self.final_lr_factor * initial_lr
            for key, kind in self.kinds.items():
                group[key] = scheduled_value(kind, targets[key], progress, group["lr"], initial_lr, lr_min,
                                             self.floors.get(key, 0.0))

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = state["steps"]
        self._apply()
