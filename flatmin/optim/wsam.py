"""WSAM: Weighted SAM, sharpness as a regularization term (Yue et al., KDD 2023).

WSAM minimises ``L + alpha·(L_p − L)``, the loss plus ``alpha = gamma/(1−gamma)`` times SAM's
sharpness ``L_p − L`` (``L_p`` the loss at the worst point of the rho-ball; the paper's weighted
objective, arXiv 2305.15817, whose equation numbers were not read here); ``gamma = 1/2`` is SAM.
With ``g`` at θ and ``g_s`` at ``θ+e`` (``docs/optimizers.md``, "WSAM"):

    e = rho · S²⊙g / (‖S⊙g‖ + ξ)                   (from the unclipped g)
    max_norm set: g and g_s each clipped to global norm max_norm (torch's clip_grad_norm_ rule)
    decouple=False:  G = alpha·g_s + (1−alpha)·g;   base step
    decouple=True:   G = g;   base step;   then θ ← θ − lr·alpha·(g_s − g)   (each group's lr)

The decoupled form (the release's default) keeps the sharpness term out of the base optimizer's
moments and weight decay, as AdamW decouples weight decay; it is skipped when the base step is.

Released code: intelligent-machine-learning/dlrover@05e4f76 ``atorch/atorch/optimizers/wsam.py``
(``WeightedSAM``: ``first_step``, ``second_step``; sam_eps ξ = 1e-12).

Cost: 2 passes, 2 extra parameter-sized buffers (θ, g) coupled, 3 decoupled (θ, g, g_s − g).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from flatmin.checks import BOOLEAN, FRACTION, NON_NEGATIVE, POSITIVE, optional
from flatmin.optim.hyper import ADAPTIVE_BALL, AROUND_TENFOLD, Card, Hyper
from flatmin.optim.multipass import Closure, MultiPassOptimizer, global_norm

#: torch.nn.utils.clip_grad_norm_'s epsilon: g · min(1, max_norm/(‖g‖ + 1e-6)).
CLIP_EPS = 1e-6


def sharpness_weight(gamma: float) -> float:
    """``alpha = gamma/(1−gamma)``, the weight of the sharpness term."""
    return gamma / (1 - gamma)


class WSAM(MultiPassOptimizer, key="wsam"):
    """Weighted SAM over any base optimizer; returns the loss of the first pass (at θ).

    ``gamma = 1/2`` (alpha 1) with ``decouple=False`` is SAM; decoupled it is SAM too over plain
    SGD (no momentum, no weight decay), to rounding. ``gamma = 0`` is the base optimizer, with a
    wasted pass. ``adaptive=True`` is ASAM's ball ``T = |θ| + eta`` on groups with ``adaptive`` true
    (flatmin's ASAM convention, ``flatmin/optim/sam.py``); the release's ``adaptive``
    (``e = rho·θ²⊙g/‖|θ|⊙g‖``) is ``adaptive=True, eta=0`` with every tensor adaptive.

    Perturbation: only groups with ``perturb`` true move, and ‖S⊙g‖ is over them; the clipping and
    the mix of g and g_s run over every tensor that has a gradient (the release clips
    ``model.parameters()``).

    Where flatmin differs from the release, and why:

    * ``max_norm`` defaults to None (the release: 1.0): in flatmin clipping is otherwise the
      trainer's (``trainer.grad_clip_norm``, on the final G, which decoupled is g alone: the
      decoupled term is not clipped by it); ``max_norm=1.0`` reproduces the release.
    * θ is restored by copying it back (the release subtracts ``e``), as the common contract requires.
    * BatchNorm statistics come from the first pass, by the trainer (the release sets BN momentum
      to 0 for the second pass; the same statistics).
    * Gradients are not all-reduced inside the step: each replica perturbs with its own g (the
      trainer's DDP rule) and the trainer averages G once. The release averages g and g_s across
      workers before clipping and mixing, so with DDP and ``max_norm`` flatmin clips each replica's
      gradients before averaging. The decoupled term ``g_s − g`` is averaged across replicas here
      (one all-reduce, when ``torch.distributed`` is initialised with more than one process), so
      the replicas stay identical.
    * Gradient accumulation: each micro-batch runs both passes on its own gradients and the trainer
      averages G; the decoupled term is the *last* micro-batch's (the base-step gate averages only
      ``.grad``, and tells a method only whether the base step ran).
    """

    hyperparameters = {
        "rho": Hyper(0.05, NON_NEGATIVE, "radius of the ascent", schedulable=True, search=AROUND_TENFOLD),
        "gamma": Hyper(0.9, FRACTION, "weight of the sharpness term, alpha = gamma/(1−gamma); 1/2 is SAM",
                       schedulable=True),
        "decouple": Hyper(True, BOOLEAN, "apply alpha·(g_s − g) after the base step, outside its moments "
                          "(false: G = alpha·g_s + (1−alpha)·g)", structural=True),
        **ADAPTIVE_BALL,
        "max_norm": Hyper(None, optional(POSITIVE), "clip g and g_s to this global L2 norm (the release's "
                          "default 1.0); null: no clipping", structural=True),
    }
    card = Card("WSAM", "2", "3 (θ, g, g_s − g); 2 if `decouple: false`", "Yue et al., KDD 2023")
    passes_per_step = 2

    @torch.no_grad()
    def step(self, closure: Closure) -> Tensor:  # type: ignore[override]
        """Two passes on the same mini-batch, the mix, the base step (and the decoupled update)."""
        loss = self.take_pass(closure)                              # g = ∇L_B(θ)          pass 1
        active = self.active()
        moved = active.perturbed
        theta = self.save("theta", moved.params, moved.params)
        g = self.save("g", active.params, active.grads)
        self.ascend_in_ball(moved, theta, "rho")                    # θ ← θ + e, e from the unclipped g
        self.take_pass(closure)                                     # g_s = ∇L_B(θ + e)    pass 2
        self.restore(moved.params, theta)
        if self.max_norm is not None:
            self._clip(g)
            self._clip(active.grads)
        if not self.decouple:
            for entry in active:                                    # G = alpha·g_s + (1−alpha)·g
                alpha = sharpness_weight(entry.options["gamma"])
                torch._foreach_mul_(entry.grads, alpha)
                torch._foreach_add_(entry.grads, self.buffers("g", entry.params), alpha=1 - alpha)
            self.base_step()
            return loss
        sharpness = self.save("sharpness", active.params, active.grads)
        torch._foreach_sub_(sharpness, g)                           # g_s − g
        torch._foreach_copy_(active.grads, g)                       # G = g
        if self.base_step():
            _average_over_replicas(sharpness)
            for entry in active:                                    # θ ← θ − lr·alpha·(g_s − g)
                alpha = sharpness_weight(entry.options["gamma"])
                torch._foreach_add_(entry.params, self.buffers("sharpness", entry.params),
                                    alpha=-entry.options["lr"] * alpha)
        return loss

    def _clip(self, tensors: list[Tensor]) -> None:
        """``x ← x · min(1, max_norm/(‖x‖ + 1e-6))`` over all of ``tensors`` (torch's clip_grad_norm_)."""
        coefficient = (self.max_norm / (global_norm(tensors) + CLIP_EPS)).clamp(max=1.0)
        torch._foreach_mul_(tensors, coefficient)


def _average_over_replicas(tensors: list[Tensor]) -> None:
    """Replace ``tensors`` by their mean over the processes of the default group (one all-reduce of
    a flat copy); nothing outside ``torch.distributed`` or with one process."""
    if not (tensors and dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat.div_(dist.get_world_size())
    torch._foreach_copy_(tensors, [view.view_as(t) for view, t in zip(flat.split([t.numel() for t in tensors]),
                                                                       tensors)])
