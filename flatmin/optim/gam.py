"""GAM: Gradient norm Aware Minimization (Zhang et al., CVPR 2023), the accelerated algorithm as
released with the paper.

GAM seeks first-order flatness: small gradient norm around θ, not only a small loss. ``h0 = g1 − g0``
estimates ``rho_p · ∇‖∇L‖``; the method ascends along it, then combines four gradients and removes
the part of the "minus" direction that is orthogonal to the "plus" one (``docs/optimizers.md``, "GAM").
Names in brackets are the released code's: rho [grad_norm_rho], rho_p [grad_rho], alpha
[grad_beta_1], beta [grad_beta_0], gamma [grad_gamma].

Cost: 4 passes, 3 extra parameter-sized buffers (θ, g0 which becomes h_minus, g1; h_plus is built
in ``.grad`` from g1 and g3, and G there from it); the spec allows 4. ``global_dot`` is one ``dot`` per
tensor: no foreach kernel computes inner products without a parameter-sized product, and on a CPU
it reads the two vectors once, about 4% of the step's own work on ResNet-18.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flatmin.checks import NON_NEGATIVE, UNIT_INTERVAL, one_of
from flatmin.optim.hyper import AROUND_TENFOLD, Card, Hyper
from flatmin.optim.multipass import NORM_EPS, ActiveParams, Closure, MultiPassOptimizer, global_dot, global_norm

class GAM(MultiPassOptimizer, key="gam"):
    """Gradient norm Aware Minimization, ``variant="released"`` (default) or ``"paper"``.

    The two variants differ only in ``h_minus``: the released code, which produced the paper's
    tables, uses ``g0 + |1−beta|·g2``; the paper's text writes ``beta·g0 + (1−beta)·g2``.
    Defaults are the released CIFAR-100 ResNet setting (rho 0.2, rho_p 0.02, alpha 0.6, beta 0.5,
    gamma 0.03); ξ = 1e-12 in every normalisation. Returns the loss of the first pass (at θ).
    Gradient accumulation: each micro-batch runs the four passes on its own gradients.
    """

    hyperparameters = {
        "rho": Hyper(0.2, NON_NEGATIVE, "[grad_norm_rho] radius of the ascent along h0 = g1 − g0", schedulable=True,
                     search=AROUND_TENFOLD),
        "rho_p": Hyper(0.02, NON_NEGATIVE, "[grad_rho] radius of the two SAM-like ascents", schedulable=True,
                       search=AROUND_TENFOLD),
        "alpha": Hyper(0.6, UNIT_INTERVAL, "[grad_beta_1] h_plus = alpha·g1 + (1−alpha)·g3", schedulable=True),
        "beta": Hyper(0.5, UNIT_INTERVAL, "[grad_beta_0] the weight of g2 in h_minus", schedulable=True),
        "gamma": Hyper(0.03, NON_NEGATIVE, "[grad_gamma] G = h_plus − gamma·h_perp", schedulable=True),
        "variant": Hyper("released", one_of("released", "paper"), "released | paper (only h_minus differs)",
                         structural=True),
    }
    card = Card("GAM", "4", "3 (θ, g0 → h_minus, g1)", "Zhang et al., CVPR 2023")
    passes_per_step = 4

    @torch.no_grad()
    def step(self, closure: Closure) -> Tensor:  # type: ignore[override]
        """The four passes of the algorithm box on the same mini-batch, then the base step."""
        loss = self.take_pass(closure)                                # g0 = ∇L_B(θ)              pass 1
        active = self.active()
        params, moved = active.params, active.perturbed.params
        theta = self.save("theta", moved, moved)
        g0 = self.save("g0", params, active.grads)
        self.ascend(active, "rho_p")                                  # θ + rho_p·g0/‖g0‖
        self.take_pass(closure)                                       # g1                        pass 2
        self.save("g1", params, active.grads)
        torch._foreach_sub_(active.grads, g0)                         # h0 = g1 − g0, in .grad
        self.restore(moved, theta)
        self.ascend(active, "rho")                                    # θ2 = θ + rho·h0/‖h0‖
        self.take_pass(closure)                                       # g2 = ∇L_B(θ2)             pass 3
        self._fold_h_minus(active)                                    # g0 buffer ← h_minus
        self.ascend(active, "rho_p")                                  # θ2 + rho_p·g2/‖g2‖
        self.take_pass(closure)                                       # g3                        pass 4
        self.restore(moved, theta)
        self._decompose(active)                                       # .grad ← G
        self.base_step()
        return loss

    def _fold_h_minus(self, active: ActiveParams) -> None:
        """``h_minus = g0 + |1−beta|·g2`` (released) or ``beta·g0 + (1−beta)·g2`` (paper), in g0's buffer."""
        for entry in active:
            beta = entry.options["beta"]
            h_minus = self.buffers("g0", entry.params)
            if self.variant == "paper":
                torch._foreach_mul_(h_minus, beta)
                torch._foreach_add_(h_minus, entry.grads, alpha=1 - beta)
            else:
                torch._foreach_add_(h_minus, entry.grads, alpha=abs(1 - beta))

    def _decompose(self, active: ActiveParams) -> None:
        """``h_plus = alpha·g1 + (1−alpha)·g3``, built in ``.grad`` (which holds g3), then
        ``G = h_plus − gamma·h_perp`` with ``h_perp = h_minus − (⟨h_minus,h_plus⟩/‖h_plus‖²)·h_plus``,
        written as ``G = (1 + gamma·c)·h_plus − gamma·h_minus``, there too (no copy of h_plus)."""
        for entry in active:
            alpha = entry.options["alpha"]
            torch._foreach_mul_(entry.grads, 1 - alpha)
            torch._foreach_add_(entry.grads, self.buffers("g1", entry.params), alpha=alpha)
        h_plus, h_minus = active.grads, self.buffers("g0", active.params)
        projection = global_dot(h_minus, h_plus) / (global_norm(h_plus) ** 2 + NORM_EPS)   # c
        for entry in active:
            gamma, grads = entry.options["gamma"], entry.grads
            torch._foreach_mul_(grads, 1 + gamma * projection)
            torch._foreach_add_(grads, self.buffers("g0", entry.params), alpha=-gamma)
