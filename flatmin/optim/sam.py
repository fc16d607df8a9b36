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

from flatmin.optim.multipass import ActiveGroup, Closure, MultiPassOptimizer


class SAM(MultiPassOptimizer):
    """Sharpness-Aware Minimization; ``adaptive=True`` gives ASAM.

    Defaults are the papers': SAM rho 0.05; ASAM rho 0.5 and eta 0.01 (official code). The widely
    copied single-file ASAM (T = |θ|, best rho 2.0) is ``eta=0`` with every tensor adaptive.
    Gradient accumulation: each micro-batch is perturbed along its own gradient (m-sharpness).
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
        active = self.active()
        theta = self.save("theta", active.params, active.params)
        scales = [self._adaptive_scale(entry) for entry in active] if self.adaptive else None
        self.ascend(active, "rho", scales)              # θ ← θ + e
        del scales                                      # free T before the next pass
        self.take_pass(closure)                         # G = ∇L_B(θ + e)
        self.restore(active.params, theta)
        self.base_step()
        return loss

    @staticmethod
    def _adaptive_scale(entry: ActiveGroup) -> list[Tensor] | None:
        """ASAM's ``T = |θ| + eta`` for this group's tensors, or None where T = 1."""
        if not entry.options.get("adaptive", True):
            return None
        return torch._foreach_add(torch._foreach_abs(entry.params), entry.options["eta"])
