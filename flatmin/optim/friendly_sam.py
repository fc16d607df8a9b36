"""F-SAM, Friendly SAM (Li, Zhou, He, Cheng & Huang, CVPR 2024, arXiv 2403.12350).

The paper splits SAM's ascent direction, the mini-batch gradient g, into the full-batch gradient
and the batch-specific noise, and argues that the full-batch part hurts generalization while the
noise carries the sharpness information. F-SAM estimates the full-batch gradient by an exponential
moving average m of past mini-batch gradients and removes it (``docs/optimizers.md``, "Friendly-SAM"):

    first step:   m = g;   d = g
    later steps:  d = g − sigma·m;   then m ← lmbda·m + (1−lmbda)·g     (d uses the previous m)
    e = rho · S²⊙d/(‖S⊙d‖ + ξ);   G = ∇L_B(θ + e)

S is ASAM's scale (``adaptive``), 1 otherwise; ξ = 1e-12. sigma = 0 is SAM. The order matters when
sigma ≠ 1: the official code (below) forms d with the previous m; the form ``d = g − sigma·m`` with
the updated m (seen in third-party summaries) is, for sigma = 1, ``lmbda·(g − m_prev)``, the same
direction.

Release: nblt/F-SAM@2e2f989 ``utils.py`` (class ``FriendlySAM``; its ``run.sh``: rho 0.2, sigma 1,
lmbda 0.6; the class default lmbda is 0.9, its ``train.py`` argparse default 0.95). It restores θ
by reassigning ``p.data`` to the saved copy and sets BatchNorm momentum to 0 in the second pass
(``train.py``), as flatmin's copy back and first-pass rule do. flatmin adds one rule: a first pass
whose gradient is not finite (an fp16 overflow, whose base step is skipped) leaves m as it was.
The release's ``adaptive`` is ASAM with T = |θ| on every tensor, here ``adaptive=True, eta=0,
adaptive_tensors="all"``; flatmin's default ASAM convention (``eta=0.01``, biases exempt) is SAM's.
pytorch_optimizer's ``FriendlySAM`` (4.1.0) computes the same formula with the norm summed in
float32 (m updated with ``lerp``, as here), so it agrees to about 1e-9 in float64, not to
rounding.

Cost: 2 passes; 2 extra parameter-sized buffers: θ (scratch) and m (state, checkpointed), nothing
transient: the new m is formed in θ's buffer before θ is saved into it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flatmin.checks import NON_NEGATIVE, UNIT_INTERVAL
from flatmin.optim.hyper import ADAPTIVE_BALL, AROUND_TENFOLD, Card, Hyper
from flatmin.optim.multipass import ActiveParams, Closure, MultiPassOptimizer, accumulation_dtype, global_norm


class FriendlySAM(MultiPassOptimizer, key="friendly_sam"):
    """Friendly SAM over any base optimizer.

    Defaults: rho 0.05 and lmbda 0.6 as specified for this API (the release's ``run.sh`` uses rho
    0.2 with lmbda 0.6, which ``flatmin/conf/optimizer/friendly_sam.yaml`` takes), sigma 1. Only groups with
    ``perturb`` true move and keep an m, and ‖S⊙d‖ is over them. Gradient accumulation: m takes in
    each micro-batch's gradient. Returns the loss of the first pass (at θ).
    """

    hyperparameters = {
        "rho": Hyper(0.05, NON_NEGATIVE, "radius of the ascent along d = g − sigma·m", schedulable=True,
                     search=AROUND_TENFOLD),
        "sigma": Hyper(1.0, NON_NEGATIVE, "d = g − sigma·m: how much of the average gradient m is removed; 0 is SAM",
                       schedulable=True),
        "lmbda": Hyper(0.6, UNIT_INTERVAL, "m ← lmbda·m + (1 − lmbda)·g", schedulable=True),
        **ADAPTIVE_BALL,
    }
    replica_state = ("m",)  # under DDP: m, from each replica's own gradients
    card = Card("F-SAM (Friendly SAM)", "2", "2 (θ, m: state)", "Li et al., CVPR 2024")
    passes_per_step = 2

    @torch.no_grad()
    def step(self, closure: Closure) -> Tensor:  # type: ignore[override]
        """Two passes on the same mini-batch; returns the loss of the first (at θ)."""
        loss = self.take_pass(closure)                          # g = ∇L_B(θ)
        moved = self.active().perturbed
        if moved:                                               # .grad ← d = g − sigma·m; m updated,
            self._remove_average(moved, self.buffers("theta", moved.params))     # θ's buffer as scratch
        theta = self.save("theta", moved.params, moved.params)
        self.ascend_in_ball(moved, theta, "rho")                # θ ← θ + rho·S²⊙d/‖S⊙d‖
        self.take_pass(closure)                                 # G = ∇L_B(θ + e)
        self.restore(moved.params, theta)
        self.base_step()
        return loss

    def _remove_average(self, moved: ActiveParams, scratch: list[Tensor]) -> None:
        """``d = g − sigma·m`` into ``.grad`` and ``m ← lmbda·m + (1−lmbda)·g``, both from the
        previous m; at the first step m is still 0, so d = g, and m becomes g. The new m is
        ``lerp(m, g, w)`` with ``w = 1 − lmbda`` once m has taken a gradient and ``w = 1`` (m = g
        exactly) before, formed in ``scratch`` (θ's buffer, before θ is saved into it), so that
        nothing parameter-sized is allocated; it replaces m only if g is finite."""
        finite = torch.isfinite(global_norm(moved.grads))      # False after an fp16 overflow in pass 1
        for entry, news in zip(moved, moved.split(scratch)):
            sigma, lmbda = entry.options["sigma"], entry.options["lmbda"]
            states = [self._state(p) for p in entry.params]
            momenta, counts = [state["m"] for state in states], [state["count"] for state in states]
            started = (torch.stack(counts) > 0).to(counts[0].dtype)    # 1 once m has taken a gradient
            weights = torch.add(1.0, started, alpha=-lmbda)             # 1 − lmbda, or 1: the first m is g
            for new, momentum, grad, weight in zip(news, momenta, entry.grads, weights):
                torch.lerp(momentum, grad, weight.to(momentum.dtype), out=new)
            torch._foreach_sub_(entry.grads, momenta, alpha=sigma)      # d = g − sigma·m
            for momentum, new in zip(momenta, news):
                torch.where(finite, new, momentum, out=momentum)        # decided on the device
            torch._foreach_add_(counts, finite)

    def _state(self, param: Tensor) -> dict[str, Tensor]:
        """``m`` (zeros until the first finite gradient) and ``count``, how many gradients it has
        taken in, created on first use."""
        state = self.state[param]
        if not state:
            state["m"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["count"] = torch.zeros((), dtype=accumulation_dtype(param), device=param.device)
        return state
