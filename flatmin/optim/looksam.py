"""LookSAM (Liu et al., "Towards Efficient and Scalable Sharpness-Aware Minimization", CVPR 2022,
Algorithm 1).

SAM's extra gradient mostly differs from the plain one by a component orthogonal to it, and that
component changes slowly. LookSAM therefore takes a full SAM step only every k steps and stores
that orthogonal part; the steps in between take one pass and add it back, rescaled to the current
gradient's norm (``docs/optimizers.md``, "LookSAM"):

    t % k == 0 (2 passes):  e = rho·g/(‖g‖+ξ);  g_s = ∇L_B(θ+e);  G = g_s
                            g_v = g_s − (⟨g_s, g⟩/(‖g‖²+ξ))·g            # kept for the next k−1 steps
    otherwise  (1 pass):    G = g + alpha·(‖g‖/(‖g_v‖+ξ))·g_v

with ``t`` the steps taken so far, so the first step is a SAM step, and ``k = 1`` is SAM. Norms
and inner products are global, over the whole parameter vector, as the paper's vectors are.
Cost: ``1 + 1/k`` passes per step on average; buffers θ and g (scratch, written on SAM steps; g's
also holds ``alpha·…·g_v`` on the others) and ``g_v`` (state): 3.

There is no official code. MarlonBecker/MSAM@780fa4f ``optimizer/looksam.py`` implements the same
algorithm with global norms; it differs here only in ‖g_v‖, taken without ξ (a relative 1e-12 at
most), in being its own SGD, and in counting every call as a step (flatmin counts the steps whose
base step ran, see the class). rollovd/LookSAM and pytorch_optimizer's ``LookSAM`` project and
normalise per tensor, and pytorch_optimizer re-runs the closure on the reuse steps (2 passes every
step): they follow other trajectories (``tests/optim/test_looksam.py`` shows by how much).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import torch
from torch import Tensor

from flatmin.checks import NON_NEGATIVE, POSITIVE_INT
from flatmin.optim.hyper import AROUND_TENFOLD, Card, Hyper
from flatmin.optim.multipass import (NORM_EPS, ActiveGroup, ActiveParams, Closure, MultiPassOptimizer, global_dot,
                                     global_norm)


class LookSAM(MultiPassOptimizer, key="looksam"):
    """LookSAM over any base optimizer: a SAM step every k steps, the reused ``g_v`` in between.

    Defaults are the paper's: rho 0.05, k 5, alpha 0.7 (the MSAM release's configs use k 10).
    ``steps`` (t) counts the steps whose base step ran: a step skipped for an fp16 overflow leaves
    t and ``g_v`` as they were (its ``g_v`` is kept only once the base step has run), so the next
    step does what the skipped one would have. Under gradient accumulation every micro-batch of
    one optimizer step is therefore of the same kind, and ``g_v`` is the last micro-batch's.
    Only groups with ``perturb`` true are moved on SAM steps, and ‖g‖ of the ascent is theirs;
    ``g_v`` and the mix are over every tensor with a gradient (``docs/optimizers.md``,
    "The param-group option perturb").
    A tensor that has a gradient but no ``g_v`` yet (no gradient at the last SAM step) gets G = g.
    ``passes_per_step`` is the next step's count (2 or 1); ``mean_passes_per_step`` is 1 + 1/k.
    Returns the loss of the first pass (at θ).
    """

    hyperparameters = {
        "rho": Hyper(0.05, NON_NEGATIVE, "radius of the ascent on the SAM steps", schedulable=True,
                     search=AROUND_TENFOLD),
        "k": Hyper(5, POSITIVE_INT, "a SAM step every k steps (k = 1: SAM)", structural=True),
        "alpha": Hyper(0.7, NON_NEGATIVE, "weight of the reused g_v: G = g + alpha·(‖g‖/‖g_v‖)·g_v",
                       schedulable=True),
    }
    replica_state = ("g_v",)  # under DDP: g_v, from each replica's own gradients
    card = Card("LookSAM", "2 every k-th step, else 1 (1 + 1/k on average)",
                "3 (θ, g; `g_v`, state)", "Liu et al., CVPR 2022")

    #: t, the steps taken so far (checkpointed in ``state_dict``).
    steps: int = 0

    @property
    def passes_per_step(self) -> int:  # type: ignore[override]
        """The passes of the next step: 2 on a SAM step (t % k == 0), else 1."""
        return 2 if self._sam_step_next() else 1

    @property
    def mean_passes_per_step(self) -> Fraction:  # type: ignore[override]
        return Fraction(self.k + 1, self.k)

    def _sam_step_next(self) -> bool:
        return self.steps % self.k == 0

    @torch.no_grad()
    def step(self, closure: Closure) -> Tensor:  # type: ignore[override]
        """A SAM step (t % k == 0) or a reuse step; returns the loss of the first pass (at θ)."""
        loss = self.take_pass(closure)                          # g = ∇L_B(θ)
        active = self.active()
        ran = self._sam_step(active, closure) if self._sam_step_next() else self._reuse_step(active)
        if ran:
            self.steps += 1
        return loss

    def _sam_step(self, active: ActiveParams, closure: Closure) -> bool:
        """G = g_s; g_v = g_s − (⟨g_s, g⟩/(‖g‖²+ξ))·g, built in g's buffer, kept if the base step ran."""
        moved = active.perturbed.params
        theta = self.save("theta", moved, moved)
        g = self.save("g", active.params, active.grads)
        self.ascend(active, "rho")                              # θ ← θ + rho·g/(‖g‖+ξ)
        self.take_pass(closure)                                 # g_s = ∇L_B(θ + e), in .grad
        self.restore(moved, theta)
        g_s = active.grads
        projection = global_dot(g_s, g) / (global_norm(g) ** 2 + NORM_EPS)
        torch._foreach_mul_(g, -projection)                     # g ← g_s − projection·g
        torch._foreach_add_(g, g_s)
        ran = self.base_step()                                  # with G = g_s (the gate may clip it)
        if ran:
            torch._foreach_copy_(self.state_tensors("g_v", active.params), g)
        return ran

    def _reuse_step(self, active: ActiveParams) -> bool:
        """G = g + alpha·(‖g‖/(‖g_v‖+ξ))·g_v over the tensors that have a ``g_v``."""
        kept = ActiveParams(ActiveGroup(entry.options, [p for p in entry.params if "g_v" in self.state.get(p, {})])
                            for entry in active)
        params = kept.params
        if params:
            g_v = [self.state[p]["g_v"] for p in params]
            ratio = global_norm(active.grads) / (global_norm(g_v) + NORM_EPS)
            for entry in kept:
                if not entry.params:
                    continue
                scaled = self.buffers("g", entry.params)        # g's buffer is free between SAM steps
                torch._foreach_copy_(scaled, [self.state[p]["g_v"] for p in entry.params])
                torch._foreach_mul_(scaled, entry.options["alpha"] * ratio)
                torch._foreach_add_(entry.grads, scaled)
        return self.base_step()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "steps": self.steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.steps = state_dict["steps"]
