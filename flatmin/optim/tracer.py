"""SGD-TRACER and Adam-TRACER: G-TRACER (Williams & Roberts, arXiv 2306.13914), in this project's
formulation.

The paper regularises the loss with a "geometric trace ratio": the curvature of the mini-batch loss
measured in the geometry of the optimizer's running diagonal Fisher estimate, as an approximation
of natural-gradient descent on a generalised-Bayes objective. Its full text was not at hand when
the spec was written, so what follows is the project's formulation of that objective
(``docs/optimizers.md``, "SGD-TRACER and Adam-TRACER"), kept in this one file so that it can be corrected:

    g   = ∇L_B(θ)                                                    # pass 1
    v   ← beta2 · v + (1−beta2) · g²;   v̂ = v / (1 − beta2^t)        # running diagonal Fisher
    D   = 1 / (sqrt(v̂) + delta)                                      # the preconditioner
    e   = rho · (D ⊙ g) / ‖sqrt(D) ⊙ g‖                              # radius rho in D's geometry
    g_e = ∇L_B(θ + e)                                                # pass 2
    G   = (1−lam) · g + lam · g_e

To first order ``G = ∇[L + lam·rho·‖g‖_D]`` with ``‖g‖_D² = Σᵢ gᵢ²/(sqrt(v̂ᵢ)+delta)``, the trace
ratio of the mini-batch Fisher to the running one; with ``D = I`` it is SAM. SGD-TRACER is this over
SGD, Adam-TRACER over Adam/AdamW; either way ``v`` is TRACER's own (checkpointed) state, never the
base optimizer's.

Cost: 2 passes; 2 extra parameter-sized buffers (θ and ``v``) at the default ``lam = 1``, a third
(a copy of g) when ``lam < 1``, and nothing transient: ``sqrt(D)`` is built in the parameters' own
storage between the passes (θ is restored from its saved copy anyway), and θ + e formed there.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flatmin.checks import FRACTION, NON_NEGATIVE, POSITIVE, UNIT_INTERVAL
from flatmin.optim.hyper import AROUND_TENFOLD, Card, Hyper
from flatmin.optim.multipass import ActiveParams, Closure, MultiPassOptimizer, accumulation_dtype, global_norm


class TRACER(MultiPassOptimizer, key="tracer"):
    """G-TRACER in the project's formulation (see the module docstring) over any base optimizer.

    Defaults: rho 0.05, lam 1.0, beta2 0.999, delta 1e-8. ``rho = 0`` or ``lam = 0`` gives the base
    optimizer's trajectory exactly. ``v`` and its step count ``t`` are updated from the first pass of
    every ``step`` call (so once per micro-batch under gradient accumulation); a first-pass gradient
    that is not finite (an fp16 overflow, whose base step is skipped) leaves them unchanged, decided
    on the device without a host synchronisation. Returns the loss of the first pass (at θ).
    """

    hyperparameters = {
        "rho": Hyper(0.05, NON_NEGATIVE, "radius of the ascent in the geometry of D", schedulable=True,
                     search=AROUND_TENFOLD),
        "lam": Hyper(1.0, UNIT_INTERVAL, "G = (1 − lam)·g + lam·g_e", schedulable=True),
        "beta2": Hyper(0.999, FRACTION, "decay of the running Fisher v", schedulable=True),
        "delta": Hyper(1e-8, POSITIVE, "D = 1/(sqrt(v̂) + delta)", schedulable=True),
    }
    replica_state = ("v",)  # under DDP: the Fisher v, from each replica's own gradients
    card = Card("SGD-TRACER, Adam-TRACER (the project's formulation of G-TRACER)", "2",
                "2 (θ, Fisher v); 3 if `lam < 1` (a copy of g)", "Williams & Roberts, arXiv 2306.13914")
    passes_per_step = 2

    @torch.no_grad()
    def step(self, closure: Closure) -> Tensor:  # type: ignore[override]
        """Two passes on the same mini-batch; returns the loss of the first (at θ)."""
        loss = self.take_pass(closure)                          # g = ∇L_B(θ)
        active = self.active()
        moved = active.perturbed
        theta = self.save("theta", moved.params, moved.params)
        for entry in active:
            if entry.options["lam"] != 1:
                self.save("g", entry.params, entry.grads)
        self._update_fisher(moved)                              # v ← …, sqrt(D) into θ's storage
        self.ascend(moved, "rho", [entry.params for entry in moved],     # θ ← θ + rho·D⊙g/‖sqrt(D)⊙g‖,
                    theta=moved.split(theta))                   # built from the saved θ
        self.take_pass(closure)                                 # g_e = ∇L_B(θ + e)
        self.restore(moved.params, theta)
        for entry in active:                                    # G = (1−lam)·g + lam·g_e
            lam = entry.options["lam"]
            if lam != 1:
                torch._foreach_mul_(entry.grads, lam)
                torch._foreach_add_(entry.grads, self.buffers("g", entry.params), alpha=1 - lam)
        self.base_step()
        return loss

    def _update_fisher(self, active: ActiveParams) -> None:
        """Fold g² into the running Fisher ``v`` (unless g is not finite) and write
        ``sqrt(D) = (sqrt(v̂) + delta)^(-1/2)`` into the parameters' own storage (θ is saved and is
        restored after the pass), so that nothing parameter-sized is allocated: the new ``v`` is
        formed there first, then taken into ``v`` by ``torch.where`` on the device-side finite flag
        (a select, so a NaN or inf in g cannot reach v; a 0-weighted product could), then turned into
        sqrt(D) in place."""
        if not active:
            return
        finite = torch.isfinite(global_norm(active.grads))
        for entry in active:
            beta2, scale = entry.options["beta2"], entry.params
            states = [self._state(p) for p in entry.params]
            fisher, steps = [s["v"] for s in states], [s["t"] for s in states]
            torch._foreach_copy_(scale, fisher)                 # β2·v + (1−β2)·g²
            torch._foreach_mul_(scale, beta2)
            torch._foreach_addcmul_(scale, entry.grads, entry.grads, value=1 - beta2)
            for old, new in zip(fisher, scale):
                torch.where(finite, new, old, out=old)
            torch._foreach_add_(steps, finite)
            corrections = torch._foreach_pow(beta2, steps)      # beta2^t → 1 − beta2^t
            torch._foreach_neg_(corrections)
            torch._foreach_add_(corrections, 1.0)
            torch._foreach_div_(scale, corrections)             # v̂ (its value after an overflow is unused)
            torch._foreach_sqrt_(scale)
            torch._foreach_add_(scale, entry.options["delta"])
            torch._foreach_rsqrt_(scale)

    def _state(self, param: Tensor) -> dict[str, Tensor]:
        """``v`` (zeros) and its update count ``t`` for ``param``, created on first use. (Not named
        ``step``: ``Optimizer.load_state_dict`` would leave a tensor of that name on the CPU.)"""
        state = self.state[param]
        if not state:
            state["v"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["t"] = torch.zeros((), dtype=accumulation_dtype(param), device=param.device)
        return state
