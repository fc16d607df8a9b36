"""Fisher-mask SAM: SAM that perturbs only the entries of θ with the largest empirical Fisher
information (FSAM: Zhong et al., "Improving Sharpness-Aware Minimization with Fisher Mask for Better
Generalization on Language Models", Findings of EMNLP 2022; the released algorithm followed here is
SSAM-F: Mi et al., "Make Sharpness-Aware Minimization Stronger: A Sparsified Perturbation Approach",
NeurIPS 2022, Fisher-mask variant).

Every ``mask_every`` steps the mask is rebuilt from the diagonal empirical Fisher of single examples
of the current mini-batch; every step ascends along the masked gradient (``docs/optimizers.md``,
"Fisher-mask SAM")::

    t = steps taken so far (state)
    g = ∇L_B(θ)                                                     pass 1, the whole batch
    if t % mask_every == 0:                                         t = 0, mask_every, …
        n = min(num_samples, B);  F = Σ_{i<n} (∇ℓ_i(θ))²             n passes closure(indices=[i])
        mask = 1 on the int(N·(1 − sparsity)) largest entries of F, 0 elsewhere      (state)
        .grad ← g again
    e = mask ⊙ g · rho/(‖g‖ + 1e-7)                                 ‖g‖ of the unmasked g
    G = ∇L_B(θ + e)                                                 last pass; the base step from θ

``sparsity`` is the fraction of entries *not* perturbed; sparsity = 0 is SAM with epsilon 1e-7.
The top-k runs over the concatenation of the perturbed tensors (param-group order), N their total
size, and ‖g‖ over the same tensors.

Source: the FSAM paper's algorithm box was not available; the specification (and this code) follow
the released Fisher-mask SAM of the same group, Mi-Peng/Sparse-Sharpness-Aware-Minimization@76974fd
``solver/sam.py`` (class ``SSAMF``; its epsilon 1e-7 is kept). flatmin departs from it in when and
from what the mask is built: the release starts from an all-zero mask (its first steps are
unperturbed) and rebuilds it *after* the SAM step at batch 0 of every ``update_freq``-th epoch, from
``num_samples`` random training examples, and its first example's backward lands on top of the step's
leftover gradient (its first Fisher term is ``(g_s + ∇ℓ_0)²``). flatmin builds the mask before the
ascent of the step, from the clean per-example gradients of the first n rows of the current
mini-batch (which the loader has shuffled), every ``mask_every`` *steps*.

Needs the extended closure protocol (single-row passes): a plain closure is a ``TypeError``.
Cost: 2 passes, plus n on mask steps; 3 parameter-sized buffers: θ and g (scratch, g written on mask
steps only) and the mask (state), in which F is summed on mask steps before the mask replaces it
(the top-k then holds one transient copy of F, concatenated).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import torch
from torch import Tensor

from flatmin.checks import NON_NEGATIVE, POSITIVE_INT, UNIT_INTERVAL
from flatmin.optim.hyper import AROUND_TENFOLD, Card, Hyper
from flatmin.optim.multipass import ActiveParams, Closure, MultiPassOptimizer, global_norm

#: The release's epsilon in ‖g‖ + ε (SAM's is 1e-12).
EPS = 1e-7


class FisherMaskSAM(MultiPassOptimizer, key="fisher_mask_sam"):
    """Fisher-mask SAM over any base optimizer.

    Defaults: rho 0.05 (SAM's), sparsity 0.5 and num_samples 16 (the SSAM-F README's CIFAR setting,
    whose rho is 0.1: ``flatmin/conf/optimizer/fisher_mask_sam.yaml``), mask_every 100 steps (the
    specification's choice; the release rebuilds once per epoch).

    ``steps`` (t) counts the steps whose base step ran, as LookSAM's does: a step skipped for an fp16
    overflow (or a micro-batch of an unfinished gradient accumulation) leaves t as it was, so the next
    step builds the mask again if this one did, and a mask built from an overflowing pass is never
    used past its step. Under gradient accumulation every micro-batch of a mask step builds a mask
    from its own rows; the last one's is kept.

    The Fisher passes forward single rows in train mode: BatchNorm sees one example (as in the
    release, whose Fisher batches have size 1), which ``BatchNorm2d`` allows and ``BatchNorm1d`` over
    ``[rows, features]`` inputs does not (torch raises "Expected more than 1 value per channel when
    training"). BatchNorm's running statistics are those of pass 1 (the trainer's first-pass rule).

    A tensor with a gradient but no mask (none at the last mask step) is not perturbed until the
    next mask step. ``passes_per_step`` is the next step's count, 2 + num_samples on a mask step
    (2 + B when the batch has fewer than num_samples rows), else 2; ``mean_passes_per_step`` is
    2 + num_samples/mask_every. Returns the loss of the first pass (at θ).
    """

    hyperparameters = {
        "rho": Hyper(0.05, NON_NEGATIVE, "radius of the masked ascent, e = mask⊙g·rho/(‖g‖ + 1e-7)",
                     schedulable=True, search=AROUND_TENFOLD),
        "sparsity": Hyper(0.5, UNIT_INTERVAL, "the fraction of entries not perturbed (0: SAM with epsilon 1e-7)",
                          structural=True),
        "mask_every": Hyper(100, POSITIVE_INT, "the mask is rebuilt on steps t = 0, mask_every, 2·mask_every, …",
                            structural=True),
        "num_samples": Hyper(16, POSITIVE_INT, "examples (the first rows of the batch) whose squared gradients "
                                               "sum to the Fisher, one pass each", structural=True),
    }
    replica_state = ("mask",)  # under DDP: the mask, from each replica's own rows
    card = Card("Fisher-mask SAM (FSAM; SSAM-F)", "2, plus `num_samples` every `mask_every`-th step",
                "3 (θ, g; mask, state)", "Zhong et al., Findings of EMNLP 2022; Mi et al., NeurIPS 2022")

    #: t, the steps taken so far (checkpointed in ``state_dict``).
    steps: int = 0

    @property
    def passes_per_step(self) -> int:  # type: ignore[override]
        """The passes of the next step: 2 + num_samples on a mask step (for a batch of at least
        num_samples rows), else 2."""
        return 2 + self.num_samples if self._mask_step_next() else 2

    @property
    def mean_passes_per_step(self) -> Fraction:  # type: ignore[override]
        return Fraction(2 * self.mask_every + self.num_samples, self.mask_every)

    def _mask_step_next(self) -> bool:
        return self.steps % self.mask_every == 0

    @torch.no_grad()
    def step(self, closure: Closure) -> Tensor:  # type: ignore[override]
        """Pass 1, the Fisher passes on a mask step, the masked ascent and the last pass; returns
        the loss of the first pass (at θ)."""
        batch_size = self.require_extended_closure(closure)
        loss = self.take_pass(closure)                          # g = ∇L_B(θ)
        moved = self.active().perturbed
        if self._mask_step_next():
            g = self.save("g", moved.params, moved.grads)
            self._build_mask(moved, closure, min(self.num_samples, batch_size))
            for p in moved.params:                              # .grad ← g again
                if p.grad is None:
                    p.grad = torch.empty_like(p)
            if g:
                torch._foreach_copy_(moved.grads, g)
        theta = self.save("theta", moved.params, moved.params)
        self._ascend(moved)                                     # θ ← θ + mask⊙g·rho/(‖g‖ + 1e-7)
        self.take_pass(closure)                                 # G = ∇L_B(θ + e)
        self.restore(moved.params, theta)
        if self.base_step():
            self.steps += 1
        return loss

    def _build_mask(self, moved: ActiveParams, closure: Closure, count: int) -> None:
        """F = Σ_{i<count} (∇ℓ_i(θ))² over the perturbed tensors, one pass per row, summed in the mask's
        own tensors; the mask is then 1 on the int(N·(1 − sparsity)) largest entries of F (torch.topk
        over their concatenation), 0 elsewhere."""
        params = moved.params
        fisher = self.state_tensors("mask", params)            # F, until the mask overwrites it
        if fisher:
            torch._foreach_zero_(fisher)
        for row in range(count):
            self.take_pass(closure, indices=torch.tensor([row]))    # ∇ℓ_row(θ)
            pairs = [(f, p.grad) for f, p in zip(fisher, params) if p.grad is not None]
            if pairs:
                squares, grads = zip(*pairs)
                torch._foreach_addcmul_(list(squares), list(grads), list(grads))
        if not params:
            return
        flat = torch.cat([f.reshape(-1) for f in fisher])
        kept = int(flat.numel() * (1 - self.sparsity))
        chosen = torch.zeros_like(flat)
        chosen.index_fill_(0, torch.topk(flat, kept, sorted=False).indices, 1)
        torch._foreach_copy_(fisher, [part.view_as(p) for part, p in zip(chosen.split([p.numel() for p in params]),
                                                                          params)])

    def _ascend(self, moved: ActiveParams) -> None:
        """θ ← θ + mask⊙g·rho/(‖g‖ + 1e-7), ‖g‖ over every moved tensor, unmasked. Built in the
        gradient tensors, which the next pass overwrites; a tensor without a mask does not move."""
        if not moved:
            return
        norm = global_norm(moved.grads)
        for entry in moved:
            masked = [(p, p.grad, self.state[p]["mask"]) for p in entry.params if "mask" in self.state.get(p, {})]
            unmasked = [p.grad for p in entry.params if "mask" not in self.state.get(p, {})]
            if unmasked:
                torch._foreach_zero_(unmasked)
            if not masked:
                continue
            params, steps, masks = (list(column) for column in zip(*masked))
            torch._foreach_mul_(steps, masks)
            torch._foreach_mul_(steps, entry.options["rho"] / (norm + EPS))
            torch._foreach_add_(params, steps)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "steps": self.steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.steps = state_dict["steps"]
