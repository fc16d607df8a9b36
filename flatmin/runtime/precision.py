"""Numeric precision, decided once: the autocast of every pass and the fp16 loss scaler, one object.

``docs/optimizers.md`` ("AMP"): bf16 autocast needs nothing special. fp16 scales the loss; every pass's
gradients are unscaled and checked for inf/NaN right after its backward, and if any pass of a step
overflowed the base step is skipped and the scale backs off. ``torch.amp.GradScaler`` cannot do
this (``GradScaler.step(closure)`` raises and ``unscale_`` runs once per step), so the scaler
below reuses the same kernels on its own state.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, ContextManager

import torch
from torch import Tensor

#: ``trainer.precision`` (beside ``auto``), and the autocast dtype of the mixed ones.
PRECISIONS = ("bf16", "fp16", "fp32")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """One precision on one device: ``autocast()`` for every pass, and ``loss_scaler()``, a fresh
    fp16 loss scaler (inert for bf16 and fp32) for each step driver that runs the passes."""

    name: str
    device: torch.device

    @classmethod
    def resolve(cls, name: str, device: torch.device) -> Precision:
        """``auto`` is bf16 on a CUDA device that supports it, fp32 otherwise (the CPU included)."""
        if name == "auto":
            name = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
        return cls(name, device)

    def autocast(self) -> ContextManager[Any]:
        """The autocast context of this precision on its device (nothing for fp32)."""
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=DTYPES[self.name])

    def loss_scaler(self) -> LossScaler:
        """A loss scaler of its own for one step driver: dynamic under fp16, inert otherwise."""
        return LossScaler(self.device, self.name == "fp16")

    def __str__(self) -> str:
        return self.name


class LossScaler:
    """Dynamic fp16 loss scaling with the multi-pass skip-step rule; inert unless ``enabled``.

    Same schedule as ``torch.amp.GradScaler``: start at 2^16, halve on overflow, double after
    ``growth_interval`` clean steps.
    """

    def __init__(self, device: torch.device, enabled: bool, init_scale: float = 2.0**16,
                 growth_factor: float = 2.0, backoff_factor: float = 0.5, growth_interval: int = 2000) -> None:
        self.enabled = enabled
        self.growth_factor = growth_factor
        self.backoff_factor = backoff_factor
        self.growth_interval = growth_interval
        self.scale = torch.full((), init_scale, dtype=torch.float32, device=device)
        self.growth_tracker = torch.zeros((), dtype=torch.int32, device=device)
        self.found_inf = torch.zeros((), dtype=torch.float32, device=device)

    def backward(self, loss: Tensor, params: list[Tensor]) -> None:
        """Backward of one pass; under fp16, of the scaled loss, then unscale and check its gradients."""
        if not self.enabled:
            loss.backward()
            return
        (loss.float() * self.scale).backward()
        inverse = self.scale.double().reciprocal().float()
        by_dtype: dict[torch.dtype, list[Tensor]] = {}
        for param in params:
            if param.grad is not None:
                by_dtype.setdefault(param.grad.dtype, []).append(param.grad)
        for grads in by_dtype.values():
            torch._amp_foreach_non_finite_check_and_unscale_(grads, self.found_inf, inverse)

    def check_losses(self, losses: Tensor) -> None:
        """A forward-only pass (the extended closure's ``backward=False``) has no gradients to check:
        under fp16 its losses are checked instead, so that an overflow there too skips the step."""
        if self.enabled:
            torch.maximum(self.found_inf, (~torch.isfinite(losses)).any().float(), out=self.found_inf)

    def overflowed(self) -> bool:
        """Whether any pass since the last :meth:`update` produced inf/NaN (one host sync)."""
        return self.enabled and bool(self.found_inf.item())

    def update(self) -> None:
        """After each optimizer step: back off on overflow or grow, then clear the overflow flag."""
        if not self.enabled:
            return
        torch._amp_update_scale_(self.scale, self.growth_tracker, self.found_inf, self.growth_factor,
                                 self.backoff_factor, self.growth_interval)
        self.found_inf.zero_()

    def state_dict(self) -> dict[str, Tensor]:
        return {"scale": self.scale.cpu(), "growth_tracker": self.growth_tracker.cpu()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.scale.copy_(state["scale"])
        self.growth_tracker.copy_(state["growth_tracker"])
