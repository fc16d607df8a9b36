"""RWP, m-RWP and mARWP: (mixed, adaptive) random weight perturbation (Li et al., TMLR 2024).

RWP trains on the loss smoothed by random, filter-wise scaled noise instead of SAM's adversarial
ascent; m-RWP mixes in a clean gradient taken on another half of the data; mARWP (``eta > 0``)
shrinks the noise where a running Fisher estimate F is large (``docs/optimizers.md``, "RWP, m-RWP and mARWP"):

    lam < 1:  A, B' = torch.arange(B).tensor_split(2)     the first ⌈B/2⌉ rows, the rest
              g0 = ∇L_A(θ)                                closure(indices=A), clean, first
    ε per perturbed tensor, in param-group order, drawn after pass 1 (before the only pass at lam = 1):
        p.dim() > 1:  ε = randn_like(p) ⊙ sigma·‖p[i]‖    per filter i (rows of p.view(p.shape[0], −1))
        p.dim() ≤ 1:  ε = randn_like(p) · sigma·(‖p‖ + 1e-16)
        eta > 0 and F exists:  ε /= sqrt(1 + eta·F_filter)   F summed over each filter (elementwise in 1-D)
    g1 = ∇L_B'(θ + ε)                                     closure(indices=B'); closure() at lam = 1
    eta > 0:  F ← beta·F + g1²                            (state; F = g1² after the first step)
    θ restored;  G = lam·g1 + (1 − lam)·g0                (G = g1 at lam = 1);  base step with G

Release: nblt/mARWP@d739394 ``train_marwp.py`` (the noise and F inline in ``train()``) and
``utils.py`` (``ARWP``, the 1×-cost single-pass form). flatmin departs from it:

* the data: the release alternates two consecutive loader batches (the clean gradient on the first,
  the noisy one on the second) and doubles the epochs; flatmin splits one mini-batch of 2×B' rows
  into its halves: the same samples per step and the same number of steps at batch 2×B', twice the
  epochs. The release's "200 epochs at batch 256" is batch 512 and 400 epochs here;
* the single pass (lam = 1): ``ARWP``'s std is ``(sigma + 1e-16)·‖p[i]‖``; flatmin uses the
  formula above for both forms, so that sigma = 0, lam = 1 is the base optimizer bit for bit;
* F takes in g1 only when it is finite (an fp16 overflow in the noisy pass, whose base step is
  skipped, leaves F as it was);
* θ is copied back; BatchNorm statistics come from the first pass, the clean half (the release
  stops their update during the noisy pass: the same statistics, from other rows);
* the noise comes from torch's default generator on each parameter's device (as the release's
  ``torch.normal``), which the trainer's checkpoint carries. The release's ``--incstd`` (a
  cosine-increasing sigma, off in its scripts) is a schedule of sigma here.

Cost: 2 passes on half the batch each (lam < 1) or 1 on the whole batch (lam = 1); buffers θ and g0
(scratch), and F (state, checkpointed) when eta > 0, plus the noise of one tensor transiently.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from flatmin.checks import NON_NEGATIVE, UNIT_INTERVAL
from flatmin.optim.hyper import AROUND_TENFOLD, BatchRequirement, Card, Hyper
from flatmin.optim.multipass import ActiveParams, Closure, MultiPassOptimizer, accumulation_dtype, global_norm

#: The release's offset in the noise of 1-D tensors, sigma·(‖p‖ + 1e-16).
EPS = 1e-16


def unsplittable(rows: int) -> str | None:
    """Why a batch of ``rows`` rows cannot be split into RWP's clean and noisy halves, or None."""
    if rows >= 2:
        return None
    return f"RWP: lam < 1 splits the batch into a clean and a noisy half; a batch of {rows} row cannot be split"


class RWP(MultiPassOptimizer, key="rwp"):
    """m-RWP (``lam < 1``), RWP (``lam = 1``) and mARWP (``eta > 0``) over any base optimizer.

    Defaults: sigma 0.015 and lam 0.5, the release's ``scripts/run_mrwp.sh`` (CIFAR-100 ResNet-18);
    eta 0 (pure m-RWP) is this API's, ``flatmin/conf/optimizer/marwp.yaml`` takes the release's mARWP
    setting eta 0.1, beta 0.99. With ``lam < 1`` the closure must be of the extended protocol
    (``docs/optimizers.md``, "The extended closure") and the batch must have 2 rows or more.
    Only groups with ``perturb`` true get noise and keep an F; G is mixed over every tensor with a
    gradient. Gradient accumulation: each micro-batch is split into halves and draws its own noise.
    Returns the loss of the first pass: the clean half's (lam < 1), or the noisy whole batch's.
    """

    hyperparameters = {
        "sigma": Hyper(0.015, NON_NEGATIVE, "noise std relative to each filter's norm (1-D tensors: the tensor's)",
                       schedulable=True, search=AROUND_TENFOLD),
        "lam": Hyper(0.5, UNIT_INTERVAL, "G = lam·g1 + (1 − lam)·g0, g0 on the clean half, g1 on the noisy half; "
                     "1: one noisy pass on the whole batch", schedulable=True),
        "eta": Hyper(0.0, NON_NEGATIVE, "mARWP: ε /= sqrt(1 + eta·F) per filter; 0: m-RWP (no F)", schedulable=True),
        "beta": Hyper(0.99, UNIT_INTERVAL, "mARWP: F ← beta·F + g1²", schedulable=True),
    }
    batch_requirements = (BatchRequirement(lambda settings, rows: unsplittable(rows) if RWP.splits(settings)
                                           else None),)
    replica_state = ("F",)  # under DDP: mARWP's F, from each replica's own gradients
    card = Card("RWP; m-RWP (`lam < 1`); mARWP (`eta > 0`)", "2 on half the batch each; 1 with `lam: 1`",
                "2 (θ, g0) + F (state) with `eta > 0`", "Li et al., TMLR 2024")

    @classmethod
    def splits(cls, settings: Mapping[str, Any]) -> bool:
        """Whether a config's RWP takes a clean half: lam < 1, or lam scheduled (it starts from 0)."""
        return cls.setting(settings, "lam") < 1 or "lam" in (settings.get("schedules") or {})

    def _split(self) -> bool:
        """Whether a clean pass on the first half comes first (some group has lam < 1)."""
        return any(group["lam"] < 1 for group in self.param_groups)

    @property
    def passes_per_step(self) -> int:  # type: ignore[override]
        return 2 if self._split() else 1

    @torch.no_grad()
    def step(self, closure: Closure) -> Tensor:  # type: ignore[override]
        """The clean pass on the first half (lam < 1), the noise, the noisy pass on the second half
        (or the whole batch), F, θ restored, G mixed, the base step; returns the first pass's loss."""
        split = self._split()
        if split:
            batch_size = self.require_extended_closure(closure)
            if (problem := unsplittable(batch_size)) is not None:
                raise ValueError(problem)
            clean_rows, noisy_rows = torch.arange(batch_size).tensor_split(2)
            loss = self.take_pass(closure, indices=clean_rows)          # g0 = ∇L_A(θ)
            clean = self.active()
            g0 = self.save("g0", clean.params, clean.grads)
        moved = self.active(with_grad=split).perturbed
        theta = self.save("theta", moved.params, moved.params)
        self._perturb(moved)                                            # θ + ε
        if split:
            self.take_pass(closure, indices=noisy_rows)                 # g1 = ∇L_B'(θ + ε)
        else:
            loss = self.take_pass(closure)                              # g1 = ∇L_B(θ + ε)
        self._update_fisher(moved)                                      # F ← beta·F + g1²
        self.restore(moved.params, theta)
        if split:
            self._mix(clean, g0)                                        # G = lam·g1 + (1 − lam)·g0
        self.base_step()
        return loss

    def _perturb(self, moved: ActiveParams) -> None:
        """θ ← θ + ε, one ``randn_like`` per tensor in param-group order, scaled filter-wise."""
        for entry in moved:
            sigma, eta = entry.options["sigma"], entry.options["eta"]
            for p in entry.params:
                noise = torch.randn_like(p)
                noise.mul_(self._scale(p, sigma))
                fisher = self.state[p].get("F") if eta > 0 and p in self.state else None
                if fisher is not None:
                    noise.div_(self._per_filter(fisher).mul(eta).add_(1).sqrt_())
                p.add_(noise)

    @staticmethod
    def _scale(p: Tensor, sigma: float) -> Tensor:
        """The noise's std: sigma·‖p[i]‖ per filter (broadcast), or sigma·(‖p‖ + 1e-16) in 1-D."""
        dtype = accumulation_dtype(p)
        if p.dim() > 1:
            norms = torch.linalg.vector_norm(p.reshape(p.shape[0], -1), dim=1, dtype=dtype)
            return RWP._broadcast(norms.mul_(sigma), p)
        return torch.linalg.vector_norm(p, dtype=dtype).add_(EPS).mul_(sigma)

    @staticmethod
    def _per_filter(fisher: Tensor) -> Tensor:
        """F summed over each filter and broadcast to the tensor's shape (1-D: F itself)."""
        if fisher.dim() > 1:
            return RWP._broadcast(fisher.reshape(fisher.shape[0], -1).sum(dim=1), fisher)
        return fisher

    @staticmethod
    def _broadcast(per_filter: Tensor, like: Tensor) -> Tensor:
        return per_filter.view(-1, *([1] * (like.dim() - 1)))

    def _update_fisher(self, moved: ActiveParams) -> None:
        """``F ← beta·F + g1²`` on groups with eta > 0 (F starts at 0), unless g1 is not finite (an
        fp16 overflow): then F stays as it was. Chosen on the device with ``torch.where``. The new F
        is built in the parameters' own storage (θ + ε, which the caller restores to θ next)."""
        for entry in moved:
            if not entry.options["eta"] > 0:
                continue
            params = [p for p in entry.params if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            finite = torch.isfinite(global_norm(grads))
            fishers = self.state_tensors("F", params)
            updated = params
            torch._foreach_copy_(updated, fishers)
            torch._foreach_mul_(updated, entry.options["beta"])
            torch._foreach_addcmul_(updated, grads, grads)
            for fisher, new in zip(fishers, updated):
                torch.where(finite, new, fisher, out=fisher)

    def _mix(self, clean: ActiveParams, g0: list[Tensor]) -> None:
        """``.grad ← lam·g1 + (1 − lam)·g0`` per group; a tensor with a clean gradient but none from
        the noisy pass gets ``(1 − lam)·g0``."""
        for entry in self.active():
            torch._foreach_mul_(entry.grads, entry.options["lam"])
        saved = iter(g0)
        for entry in clean:
            for p in entry.params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            torch._foreach_add_(entry.grads, [next(saved) for _ in entry.params], alpha=1 - entry.options["lam"])
