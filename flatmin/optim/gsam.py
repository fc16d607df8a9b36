"""GSAM: Surrogate Gap Guided Sharpness-Aware Minimization (Zhuang et al., ICLR 2022).

GSAM minimises the perturbed loss ``f_p = max_{‖e‖≤rho} L(θ+e)`` and the surrogate gap
``h = f_p − f`` together. After SAM's two passes (``g`` at θ, ``g_s`` at ``θ+e``) it removes from
``g`` its component along ``g_s`` and *descends* along the rest, which lowers ``h`` without
changing ``f_p`` to first order (paper, Algorithm 1; ``docs/optimizers.md``, "GSAM"):

    e   = rho · S²⊙g / (‖S⊙g‖ + ξ);   g_s = ∇L_B(θ + e)
    minimize_fp=True  (Algorithm 1, both releases):
        cos = ⟨g, g_s⟩ / (‖g_s‖·‖g‖ + ξ);   g_⊥ = g − cos·‖g‖ · g_s/(‖g_s‖ + ξ);   G = g_s − alpha·g_⊥
    minimize_fp=False (the JAX release's min(f, h)):
        ĝ = g/(‖g‖ + ξ);   G = g + alpha·(g_s − ⟨g_s, ĝ⟩ ĝ)

Released code: juntang-zhuang/GSAM@a770275 ``gsam/gsam.py`` (PyTorch: ``perturb_weights``,
``gradient_decompose``, ξ = ``perturb_eps`` = 1e-12) and google-research/big_vision@0127fb6
``big_vision/trainers/proj/gsam/gsam.py`` (JAX, ``gsam_gradient``, where ``minimize_fp`` comes from).
The paper's rho schedule (Algorithm 1, step 0: rho proportional to the learning rate between
rho_max and rho_min) is flatmin's shared ``optimizer.schedules.rho: proportional_to_lr`` with
``optimizer.rho_min`` (``flatmin/optim/hyper_schedule.py``); ``rho`` here is the value in force.

Cost: 2 passes, 2 extra parameter-sized buffers (θ and g).
"""

from __future__ import annotations

import torch
from torch import Tensor

from flatmin.checks import BOOLEAN, NON_NEGATIVE
from flatmin.optim.hyper import ADAPTIVE_BALL, AROUND_TENFOLD, Card, Hyper
from flatmin.optim.multipass import NORM_EPS, ActiveParams, Closure, MultiPassOptimizer, global_dot, global_norm


class GSAM(MultiPassOptimizer, key="gsam"):
    """Surrogate gap guided SAM over any base optimizer; returns the loss of the first pass (at θ).

    ``alpha = 0`` is SAM bit for bit (with ``minimize_fp=False`` it is the base optimizer, with a
    wasted pass). ``adaptive=True`` measures the ball in
    ASAM's scale ``T = |θ| + eta`` on the tensors of groups with ``adaptive`` true (flatmin's ASAM
    convention, ``flatmin/optim/sam.py``); the PyTorch release's ``adaptive`` (``e = rho·θ²⊙g/‖|θ|⊙g‖``)
    is ``adaptive=True, eta=0`` with every tensor adaptive (``adaptive_tensors: all``).
    big_vision's ``adaptive_perturbation`` (``e = rho·|θ|⊙g/‖g‖``) is not offered.

    Perturbation: only groups with ``perturb`` true move, and ‖S⊙g‖ is over them; the
    decomposition (norms, inner products) runs over every tensor that has a gradient.

    Where flatmin differs from the releases, and why:

    * θ is restored by copying it back (the PyTorch release subtracts ``e``, which can differ in
      the last bit), as the common contract requires.
    * BatchNorm statistics come from the first pass, by the trainer (the PyTorch release sets BN
      momentum to 0 for the second pass; the same statistics).
    * ``minimize_fp=False`` puts ξ in ``ĝ = g/(‖g‖+ξ)``; big_vision normalises without it (a
      relative difference of order ξ/‖g‖), so that a zero gradient gives ``G = 0``, not NaN.
    * No gradient all-reduce inside the step: the trainer averages ``G`` across replicas once
      (the PyTorch release's ``_sync_grad`` after ``no_sync`` passes; the same thing).

    Gradient accumulation: each micro-batch runs both passes and the decomposition on its own
    gradients; the trainer averages the resulting ``G`` (m-sharpness).
    """

    hyperparameters = {
        "rho": Hyper(0.05, NON_NEGATIVE, "radius of the ascent (the paper's rho_t; rho_max under the LR-"
                     "proportional schedule)", schedulable=True, search=AROUND_TENFOLD),
        "alpha": Hyper(0.4, NON_NEGATIVE, "weight of the surrogate-gap term: G = g_s − alpha·g_⊥", schedulable=True),
        **ADAPTIVE_BALL,
        "minimize_fp": Hyper(True, BOOLEAN, "true: min(f_p, h), the paper's Algorithm 1; false: min(f, h), "
                             "big_vision's option", structural=True),
    }
    card = Card("GSAM", "2", "2 (θ, g)", "Zhuang et al., ICLR 2022")
    passes_per_step = 2

    @torch.no_grad()
    def step(self, closure: Closure) -> Tensor:  # type: ignore[override]
        """Two passes on the same mini-batch, the decomposition, then the base step."""
        loss = self.take_pass(closure)                              # g = ∇L_B(θ)          pass 1
        active = self.active()
        moved = active.perturbed
        theta = self.save("theta", moved.params, moved.params)
        self.save("g", active.params, active.grads)
        self.ascend_in_ball(moved, theta, "rho")                    # θ ← θ + e
        self.take_pass(closure)                                     # g_s = ∇L_B(θ + e)    pass 2
        self.restore(moved.params, theta)
        if self.minimize_fp:
            self._descend_the_gap(active)
        else:
            self._minimize_f_and_gap(active)
        self.base_step()
        return loss

    def _descend_the_gap(self, active: ActiveParams) -> None:
        """Algorithm 1: ``G = g_s − alpha·g_⊥``, written as ``G = (1 + alpha·c)·g_s − alpha·g`` with
        ``c = cos·‖g‖/(‖g_s‖+ξ)``, into ``.grad`` (the g buffer is used up)."""
        g = self.buffers("g", active.params)
        g_s = active.grads
        g_norm, g_s_norm = global_norm(g), global_norm(g_s)
        cosine = global_dot(g, g_s) / (g_s_norm * g_norm + NORM_EPS)
        c = cosine * g_norm / (g_s_norm + NORM_EPS)
        for entry in active:
            alpha = entry.options["alpha"]
            torch._foreach_mul_(entry.grads, 1 + alpha * c)
            torch._foreach_add_(entry.grads, self.buffers("g", entry.params), alpha=-alpha)

    def _minimize_f_and_gap(self, active: ActiveParams) -> None:
        """big_vision's ``minimize_fp=False``: ``G = g + alpha·(g_s − ⟨g_s,ĝ⟩ĝ)``, written as
        ``G = alpha·g_s + (1 − alpha·p)·g`` with ``p = ⟨g_s,g⟩/(‖g‖+ξ)²``, into ``.grad``."""
        g = self.buffers("g", active.params)
        projection = global_dot(active.grads, g) / (global_norm(g) + NORM_EPS) ** 2      # p
        for entry in active:
            alpha, clean = entry.options["alpha"], self.buffers("g", entry.params)
            torch._foreach_mul_(entry.grads, alpha)
            torch._foreach_mul_(clean, 1 - alpha * projection)
            torch._foreach_add_(entry.grads, clean)
