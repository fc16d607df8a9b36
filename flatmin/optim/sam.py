"""SAM (Foret et al., ICLR 2021) and ASAM (Kwon et al., ICML 2021).

SAM ascends to the worst point of a rho-ball around θ and takes the gradient there:
``e = rho · g/(‖g‖+ξ)``, ``G = ∇L_B(θ+e)``. ASAM (``adaptive=True``) measures the ball in the
parameter-scaled geometry ``T = |θ| + eta``: ``e = rho · T²⊙g / ‖T⊙g‖``; tensors of a param group
with ``adaptive=False`` (biases, set by ``build_optimizer``) use ``T = 1``.
Cost: 2 passes, 1 extra parameter-sized buffer (the saved θ).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from flatmin.optim.multipass import NORM_EPS, Closure, GroupGrads, MultiPassOptimizer, global_norm


class SAM(MultiPassOptimizer):
    """Sharpness-Aware Minimization; ``adaptive=True`` gives ASAM.

    Defaults are the papers': SAM rho 0.05; ASAM rho 0.5 and eta 0.01 (official code). The widely
    copied single-file ASAM (T = |θ|, best rho 2.0) is ``eta=0`` with every tensor adaptive.
    """

    passes_per_step = 2

    def __init__(self, params: Any, base_optimizer: type[Optimizer] | Optimizer, rho: float = 0.05,
                 adaptive: bool = False, eta: float = 0.01, **base_kwargs: Any) -> None:
        if rho < 0:
            raise ValueError(f"rho must be >= 0, got {rho}")
        self.adaptive = adaptive
        super().__init__(params, base_optimizer, {"rho": rho, "eta": eta}, **base_kwargs)

    @torch.no_grad()
    def step(self, closure: Closure) -> Tensor:  # type: ignore[override]
        """Two passes on the same mini-batch; returns the loss of the first (at θ)."""
        loss = self.take_pass(closure)                  # g = ∇L_B(θ)
        params, theta = self._ascend()                  # θ ← θ + e, the saved θ kept
        self.take_pass(closure)                         # G = ∇L_B(θ + e)
        self.restore(params, theta)
        self.base_step()
        return loss

    def _ascend(self) -> tuple[list[Tensor], list[Tensor]]:
        """Save θ and move to ``θ + e``, ``e = rho·T²⊙g/(‖T⊙g‖+ξ)`` (T = 1 for plain SAM).

        ``e`` is built in place in the gradient tensors, which the next pass overwrites; they are
        referenced only inside this function so the next pass can free them.
        """
        groups = self.groups_with_grads()
        params = [p for entry in groups for p in entry.params]
        theta = self.save("theta", params)
        scales = [self._adaptive_scale(entry) for entry in groups]
        for entry, scale in zip(groups, scales):        # g ← T⊙g
            if scale is not None:
                torch._foreach_mul_(entry.grads, scale)
        norm = global_norm([g for entry in groups for g in entry.grads])
        for entry, scale in zip(groups, scales):        # g ← rho·T²⊙g/‖T⊙g‖, θ ← θ + g
            if scale is not None:
                torch._foreach_mul_(entry.grads, scale)
            torch._foreach_mul_(entry.grads, entry.group["rho"] / (norm + NORM_EPS))
            torch._foreach_add_(entry.params, entry.grads)
        return params, theta

    def _adaptive_scale(self, entry: GroupGrads) -> list[Tensor] | None:
        """ASAM's ``T = |θ| + eta`` for this group's tensors, or None where T = 1."""
        if not self.adaptive or not entry.group.get("adaptive", True):
            return None
        return torch._foreach_add(torch._foreach_abs(entry.params), entry.group["eta"])
