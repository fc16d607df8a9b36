"""VaSSO: variance-suppressed sharpness-aware optimization (Li & Giannakis, NeurIPS 2023).

SAM perturbs θ along the mini-batch gradient g, a noisy estimate of the direction in which the
loss rises fastest, so its "adversary" changes with every batch. VaSSO perturbs along an
exponential moving average d of the mini-batch gradients, which varies less from step to step
(``docs/optimizers.md``, "VaSSO"):

    d ← (1−theta)·d + theta·g          the first d is g itself
    e = rho · d/(‖d‖ + 1e-7)
    G = ∇L_B(θ + e)                     the base optimizer then steps from θ with G

theta = 1 keeps no memory: that is SAM, with the release's 1e-7 in place of SAM's 1e-12.

Release: BingcongLi/VaSSO@3524bad ``solver/vasso.py`` (class ``VASSO``; its epsilon 1e-7 is kept).
flatmin differs from it where the formula does not change: θ is copied back after the second pass
(the release subtracts e, exact only to rounding); BatchNorm statistics come from the first pass
alone (the release updates them in both); a first pass whose gradient is not finite (an fp16
overflow, whose base step is skipped) leaves d as it was (a step whose second pass alone overflowed
keeps the finite g it took in).

Cost: 2 passes; 2 extra parameter-sized buffers: θ (scratch) and d (state, checkpointed).
"""

from __future__ import annotations

import torch
from torch import Tensor

from flatmin.checks import NON_NEGATIVE, UNIT_INTERVAL
from flatmin.optim.hyper import AROUND_TENFOLD, Card, Hyper
from flatmin.optim.multipass import ActiveParams, Closure, MultiPassOptimizer, accumulation_dtype, global_norm

#: The release's epsilon in ‖d‖ + ε (SAM's is 1e-12).
EPS = 1e-7


class VaSSO(MultiPassOptimizer, key="vasso"):
    """VaSSO over any base optimizer.

    Defaults: rho 0.05 (the release's and SAM's); theta 0.4, the value this API was specified with.
    The release trains with theta 0.9 (its ``configs/defaulf_cfg.py`` default and ``train.sh``,
    CIFAR-100 WRN-28-10 with rho 0.2), which ``flatmin/conf/optimizer/vasso.yaml`` uses. Only groups with
    ``perturb`` true move and keep a d, and ‖d‖ is over them. Gradient accumulation: d takes in each
    micro-batch's gradient. Returns the loss of the first pass (at θ).
    """

    hyperparameters = {
        "rho": Hyper(0.05, NON_NEGATIVE, "radius of the ascent along d", schedulable=True, search=AROUND_TENFOLD),
        "theta": Hyper(0.4, UNIT_INTERVAL, "d ← (1 − theta)·d + theta·g; 1 is SAM (with epsilon 1e-7)",
                       schedulable=True),
    }
    replica_state = ("d",)  # under DDP: d, from each replica's own gradients
    card = Card("VaSSO", "2", "2 (θ, d: state)", "Li & Giannakis, NeurIPS 2023")
    passes_per_step = 2

    @torch.no_grad()
    def step(self, closure: Closure) -> Tensor:  # type: ignore[override]
        """Two passes on the same mini-batch; returns the loss of the first (at θ)."""
        loss = self.take_pass(closure)                          # g = ∇L_B(θ)
        moved = self.active().perturbed
        theta = self.save("theta", moved.params, moved.params)
        if moved:
            self._update_average(moved)                         # d ← (1−theta)·d + theta·g, built in θ's storage
            self.restore(moved.params, theta)
            self._ascend_along_average(moved)                   # θ ← θ + rho·d/(‖d‖ + 1e-7)
        self.take_pass(closure)                                 # G = ∇L_B(θ + e)
        self.restore(moved.params, theta)
        self.base_step()
        return loss

    def _update_average(self, moved: ActiveParams) -> None:
        """``d ← (1−theta)·d + theta·g``, computed in the release's order; the first d is g.

        A gradient that is not finite (an fp16 overflow in pass 1, whose base step will be skipped)
        must not enter d. Whether it is finite is known on the device only, so d is chosen with
        ``torch.where``: an ``if`` would make the host wait for the device.

        The new d is built in the parameters' own storage, not in a fresh parameter-sized tensor:
        θ is saved, and the caller copies it back.
        """
        finite = torch.isfinite(global_norm(moved.grads))
        for entry in moved:
            theta = entry.options["theta"]
            states = [self._state(p) for p in entry.params]
            averaged = entry.params
            torch._foreach_copy_(averaged, [state["d"] for state in states])
            torch._foreach_mul_(averaged, 1 - theta)
            torch._foreach_add_(averaged, entry.grads, alpha=theta)
            for state, new, grad in zip(states, averaged, entry.grads):
                torch.where(state["count"] > 0, new, grad, out=new)        # the first d is g itself
                torch.where(finite, new, state["d"], out=state["d"])       # else d stays as it was
                state["count"].add_(finite)

    def _ascend_along_average(self, moved: ActiveParams) -> None:
        """``θ ← θ + rho·d/(‖d‖ + 1e-7)``, ‖d‖ over every moved tensor. The step is built in the
        gradient tensors, which the next pass overwrites."""
        norm = global_norm([self.state[p]["d"] for p in moved.params])
        for entry in moved:
            steps = entry.grads
            torch._foreach_copy_(steps, [self.state[p]["d"] for p in entry.params])
            torch._foreach_mul_(steps, entry.options["rho"] / (norm + EPS))
            torch._foreach_add_(entry.params, steps)

    def _state(self, param: Tensor) -> dict[str, Tensor]:
        """``d`` (zeros until the first finite gradient) and ``count``, how many gradients it has
        taken in, created on first use."""
        state = self.state[param]
        if not state:
            state["d"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["count"] = torch.zeros((), dtype=accumulation_dtype(param), device=param.device)
        return state
