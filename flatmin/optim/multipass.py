"""The machinery every multi-pass method shares: save θ, perturb, take a pass, restore, step.

The contract (``optimizers.md``, "The common contract"): a method evaluates the gradient of the
*same* mini-batch at one or more points near θ by calling ``closure()``, leaves the gradient ``G``
it wants in ``p.grad``, copies θ back bit for bit, and lets the *base* optimizer (SGD, Adam, …)
take its ordinary step with ``G``. Weight decay, momentum and Adam moments are the base
optimizer's, applied once, at θ.

All tensor work goes through ``torch._foreach_*`` kernels and global norms stay on the device, so
a step never synchronises with the host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor
from torch.optim import Optimizer

Closure = Callable[[], Tensor]

#: Added to norms in fp32 or wider; 1e-12 would underflow in fp16.
NORM_EPS = 1e-12


@dataclass
class GroupGrads:
    """The parameters of one param group that received a gradient, with those gradients."""

    group: dict[str, Any]
    params: list[Tensor]
    grads: list[Tensor]


def global_norm(tensors: list[Tensor]) -> Tensor:
    """The L2 norm over all ``tensors`` seen as one vector, as a device tensor in fp32 (fp64 when
    the tensors are fp64, so float64 checks of the formulas stay exact)."""
    dtype = torch.float64 if tensors[0].dtype == torch.float64 else torch.float32
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors, 2, dtype=dtype)))


class MultiPassOptimizer(Optimizer):
    """Base class of the flat-minima methods: wraps a base optimizer on shared param groups.

    ``base_optimizer`` is an optimizer class (built here on ``params`` with ``**base_kwargs``) or
    an instance, whose param groups are adopted (``params`` is then ignored and may be None). The method's own
    hyperparameters (``defaults``) live in the same group dicts, so a scheduler attached to
    either object can change ``lr`` or ``rho`` per group.

    ``base_step_gate``, when set (the trainer sets it), is called after ``G`` is in ``.grad`` and
    θ is restored; it may edit the gradients (averaging micro-batches, clipping) and returns
    False to skip the base step (fp16 overflow, an unfinished gradient accumulation).
    """

    #: Forward+backward passes one ``step`` performs; subclasses set it.
    passes_per_step: int = 1

    def __init__(self, params: Any, base_optimizer: type[Optimizer] | Optimizer,
                 defaults: dict[str, Any], **base_kwargs: Any) -> None:
        if isinstance(base_optimizer, Optimizer):
            if base_kwargs:
                raise TypeError("base-optimizer keyword arguments need a base optimizer class, not an instance")
            super().__init__(base_optimizer.param_groups, defaults)
            self.base_optimizer = base_optimizer
        else:
            super().__init__(params, defaults)
            self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)
        self.base_step_gate: Callable[[], bool] | None = None
        self._scratch: dict[tuple[str, int], Tensor] = {}

    # -- the steps of an algorithm box -------------------------------------------------------
    @staticmethod
    def take_pass(closure: Closure) -> Tensor:
        """One forward+backward of the mini-batch at the current parameters (gradients enabled)."""
        with torch.enable_grad():
            return closure()

    def groups_with_grads(self) -> list[GroupGrads]:
        """Per param group, the parameters that have a gradient; the others are never touched."""
        result = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                result.append(GroupGrads(group, params, [p.grad for p in params]))
        return result

    def buffers(self, name: str, like: list[Tensor]) -> list[Tensor]:
        """Parameter-sized scratch tensors named ``name`` (allocated once, reused every step).

        Scratch is not optimizer state: it is not checkpointed, because every step rewrites it.
        """
        result = []
        for tensor in like:
            key = (name, id(tensor))
            buffer = self._scratch.get(key)
            if buffer is None:
                buffer = self._scratch[key] = torch.empty_like(tensor)
            result.append(buffer)
        return result

    def save(self, name: str, tensors: list[Tensor]) -> list[Tensor]:
        """Copy ``tensors`` into the scratch buffers ``name`` and return those buffers."""
        saved = self.buffers(name, tensors)
        torch._foreach_copy_(saved, tensors)
        return saved

    @staticmethod
    def restore(params: list[Tensor], saved: list[Tensor]) -> None:
        """Copy the saved θ back into the parameters, bit for bit."""
        torch._foreach_copy_(params, saved)

    def base_step(self) -> None:
        """The base optimizer's ordinary step with ``G`` in ``.grad``, unless the gate says skip."""
        if self.base_step_gate is None or self.base_step_gate():
            self.base_optimizer.step()

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The method's own state (``self.state``) and the base optimizer's, together."""
        return {"method": super().state_dict(), "base": self.base_optimizer.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict["method"])
        self.base_optimizer.load_state_dict(state_dict["base"])
        self.param_groups = self.base_optimizer.param_groups
