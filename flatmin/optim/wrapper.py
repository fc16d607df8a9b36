"""What the optimizers that wrap another one share (Lookahead, WeightAveraging): stepping the wrapped
optimizer, counting only the base steps that ran, and putting other weights in the model for a while.
"""

from __future__ import annotations

import contextlib
from fractions import Fraction
from typing import Any, Iterator

import torch
from torch import Tensor
from torch.optim import Optimizer

from flatmin.optim.multipass import Closure, MultiPassOptimizer


class OptimizerWrapper(MultiPassOptimizer):
    """Wraps ``optimizer`` (a base optimizer, a multi-pass method or another wrapper) on its param groups.

    It keeps the wrapped optimizer's ``base_step_gate``: the gate set on the wrapper decides every
    base step of the wrapped one, so only steps whose base step ran count in ``base_steps``
    (checkpointed): a step skipped for an fp16 overflow or a micro-batch of an unfinished gradient
    accumulation does not. A subclass acts at two points of a step: :meth:`before_base_step` (``G``
    is in ``.grad`` and the gate has passed it) and :meth:`after_base_step`. Its passes are the
    wrapped optimizer's.
    """

    def __init__(self, optimizer: Optimizer) -> None:
        super().__init__(None, optimizer)
        self.base_steps = 0
        self._stepped = False
        if isinstance(optimizer, MultiPassOptimizer):
            optimizer.base_step_gate = self._gate_and_count

    @property
    def passes_per_step(self) -> int:  # type: ignore[override]
        return getattr(self.base_optimizer, "passes_per_step", 1)

    @property
    def mean_passes_per_step(self) -> int | Fraction:  # type: ignore[override]
        return getattr(self.base_optimizer, "mean_passes_per_step", 1)

    @torch.no_grad()
    def step(self, closure: Closure) -> Tensor:  # type: ignore[override]
        """One step of the wrapped optimizer; after a base step that ran, :meth:`after_base_step`."""
        self._stepped = False
        if isinstance(self.base_optimizer, MultiPassOptimizer):
            loss = self.base_optimizer.step(closure)             # its base step asks _gate_and_count
        else:
            loss = self.take_pass(closure)
            if self._gate_and_count():
                self.base_optimizer.step()
        if self._stepped:
            self.base_steps += 1
            self.after_base_step()
        return loss

    def _gate_and_count(self) -> bool:
        """The trainer's gate (if any), remembering whether the base step runs; then :meth:`before_base_step`."""
        self._stepped = self.base_step_gate is None or bool(self.base_step_gate())
        if self._stepped:
            self.before_base_step()
        return self._stepped

    def before_base_step(self) -> None:
        """Between the gate and a base step that runs (RAPP's proximal term); nothing by default."""

    def after_base_step(self) -> None:
        """After a base step that ran, ``base_steps`` counted (Lookahead's sync); nothing by default."""

    def gate_tensors(self) -> list[Tensor]:
        """The wrapped method's (bSAM's ``gs``)."""
        return self.base_optimizer.gate_tensors() if isinstance(self.base_optimizer, MultiPassOptimizer) else []

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "base_steps": self.base_steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.base_steps = state_dict["base_steps"]


@contextlib.contextmanager
def swapped_in(tensors: list[Tensor], values: list[Tensor]) -> Iterator[None]:
    """``values`` in ``tensors`` (parameters, buffers) inside; the tensors' own values back bit for
    bit on exit, even after an exception (what an ``evaluation_weights()`` context does)."""
    if not tensors:
        yield
        return
    with torch.no_grad():
        own = [tensor.detach().clone(memory_format=torch.preserve_format) for tensor in tensors]
        torch._foreach_copy_(tensors, values)
    try:
        yield
    finally:
        with torch.no_grad():
            torch._foreach_copy_(tensors, own)
