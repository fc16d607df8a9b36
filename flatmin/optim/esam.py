"""ESAM: efficient sharpness-aware minimization (Du et al., ICLR 2022).

ESAM makes SAM cheaper in two ways (``docs/optimizers.md``, "ESAM"):

* SWP, stochastic weight perturbation: each tensor is perturbed in a step with probability beta
  (the mask is drawn at the end of a step for the next one; the first step perturbs every tensor),
  and the ascent is scaled by 1/beta to keep its expected size;
* SDS, sharpness-sensitive data selection: the second pass back-propagates only the rows of the
  mini-batch whose loss the ascent raised most.

    pass 1:  g = ∇L_B(θ), ℓ_b = the rows' losses at θ           closure(per_example=True)
    e = g · (rho/(‖g_kept‖ + 1e-7)) / beta   on kept tensors, 0 on masked ones      (paper eq. 4, Alg. 1)
    gamma < 0.99:  ℓ_a = the rows' losses at θ+e               closure(backward=False)
                   s = ℓ_a − ℓ_b;   cutoff = the ⌊gamma·B⌋-th largest s
                   G = ∇ of the mean loss of the rows with s > cutoff at θ+e   closure(indices=rows)
    gamma ≥ 0.99:  G = ∇L_B(θ+e)                                closure()
    θ restored;  beta < 1: u = torch.rand(n, dtype=float64), n the perturbed tensors with a gradient;
                 tensor i is masked in the next step iff u_i > beta;  base step with G

Release: dydjw9/Efficient_SAM@1e06840 ``utils/Esam.py`` (class ``ESAM``; its epsilon 1e-7, its
1/beta, its threshold 0.99 and its strict ``s > cutoff``, which keeps ⌊gamma·B⌋ − 1 rows when there
are no ties, are kept). ⌊gamma·B⌋ ≤ 1 selects no row and is a ``ValueError``.
flatmin departs from it where the step's values do not change, or where the release has none:

* the mask: the release switches ``requires_grad`` off for the masked tensors during pass 1, so
  that they get no gradient; flatmin keeps it as a 0/1 factor per tensor (state, on the tensor's
  device) and multiplies their pass-1 gradient by 0. e and G are the same; the host never reads the
  mask, the model's graph never changes (no recompilation under ``torch.compile``, nothing for DDP
  to notice), and a step where every tensor is masked is a step without perturbation where the
  release's backward would fail. The cost: pass 1 computes the masked tensors' weight gradients,
  which the release skips;
* the draw: the release calls Python's ``random.random()`` once per tensor; flatmin draws the same
  uniforms from torch's default CPU generator (``torch.rand(n)`` equals n scalar draws), which the
  trainer's checkpoint carries;
* θ is copied back (the release subtracts e), for every perturbed tensor;
* gamma ≥ 0.99 skips the forward-only pass (the release runs it and ignores it: only BatchNorm
  statistics would notice, and flatmin keeps those of the first pass);
* no row strictly above the cutoff (every sharpness tied, as with rho 0 or nothing perturbed, or
  not finite after an fp16 overflow): the second pass takes every row (the release back-propagates
  an empty batch);
* BatchNorm statistics come from pass 1 (the release updates them in all three forwards).

Cost: 2 backward passes and 1 forward-only pass with the selection (the second backward on about
gamma·B rows), 2 backward passes without; 1 parameter-sized buffer (θ, scratch) and the mask, one
number per tensor (state, checkpointed). ``step`` syncs with the host once, to read the selected
rows (``nonzero``); without the selection it never does.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flatmin.checks import NON_NEGATIVE, UNIT_INTERVAL, Check, is_number
from flatmin.optim.hyper import AROUND_TENFOLD, BatchRequirement, Card, Hyper
from flatmin.optim.multipass import ActiveParams, Closure, MultiPassOptimizer, global_norm

#: The release's epsilon in ‖g‖ + ε (SAM's is 1e-12).
EPS = 1e-7
#: gamma from which every row is used (the release's threshold).
SELECT_ALL = 0.99

PROBABILITY = Check(lambda value: is_number(value) and 0 < value <= 1, "a number in (0, 1]")


def empty_selection(gamma: float, rows: int) -> str | None:
    """Why ESAM's second pass would select no row of a batch of ``rows`` (the rows kept are those
    strictly above the ⌊gamma·B⌋-th largest sharpness), or None; ``gamma >= 0.99`` selects them all."""
    size = int(rows * gamma)
    if gamma >= SELECT_ALL or size > 1:
        return None
    return (f"ESAM: gamma·B = {gamma}·{rows} selects no row (the rows strictly above the int(gamma·B) = {size}-th "
            "sharpest are kept); raise gamma or the batch size")


class ESAM(MultiPassOptimizer, key="esam"):
    """ESAM over any base optimizer.

    Defaults: rho 0.05, beta 0.6, gamma 0.5, the release's ``run.sh`` for CIFAR ResNet-18 (its
    PyramidNet uses rho 0.2, its WRN at batch 1024 beta 0.5 and rho 0.1). beta = 1 and gamma = 1 is
    SAM with the release's epsilon 1e-7. With ``gamma < 0.99`` the closure must be of the extended
    protocol (``docs/optimizers.md``, "The extended closure"); a plain one is a ``TypeError``.
    Only groups with ``perturb`` true are moved and masked, and ‖g_kept‖ is over them. Gradient
    accumulation: each micro-batch selects its own rows; the mask is drawn after each micro-batch.
    Returns the mean loss of the first pass (at θ).
    """

    hyperparameters = {
        "rho": Hyper(0.05, NON_NEGATIVE, "radius of the ascent (then divided by beta)", schedulable=True,
                     search=AROUND_TENFOLD),
        "beta": Hyper(0.6, PROBABILITY, "SWP: the probability that a tensor is perturbed in a step; 1 perturbs all",
                      structural=True),
        "gamma": Hyper(0.5, UNIT_INTERVAL, "SDS: the second pass takes the rows above the gamma·B-th sharpest; "
                       ">= 0.99 takes every row and skips the forward-only pass", structural=True),
    }
    batch_requirements = (BatchRequirement(lambda settings, rows: empty_selection(ESAM.setting(settings, "gamma"),
                                                                                rows)),)
    replica_state = ("mask",)  # under DDP: the SWP mask, from each replica's own draws
    card = Card("ESAM", "3 (2 + 1 forward-only); 2 with `gamma >= 0.99`", "1 (θ) + the tensor mask (state)",
                "Du et al., ICLR 2022")

    @property
    def selects(self) -> bool:
        """Whether the second pass takes only the sharpest rows (gamma < 0.99)."""
        return self.gamma < SELECT_ALL

    @property
    def passes_per_step(self) -> int:  # type: ignore[override]
        return 3 if self.selects else 2

    @torch.no_grad()
    def step(self, closure: Closure) -> Tensor:  # type: ignore[override]
        """Pass 1 at θ, the ascent, the forward-only pass and the selected rows' pass at θ + e (or
        the whole batch's), θ restored, the next mask drawn, the base step; returns pass 1's loss."""
        if self.selects:
            selected = self._selection_size(self.require_extended_closure(closure))
            before = self.take_pass(closure, per_example=True)          # g, ℓ_b at θ
            loss = before.mean()
        else:
            loss = self.take_pass(closure)                              # g at θ
        moved = self.active().perturbed
        theta = self.save("theta", moved.params, moved.params)
        if moved:
            self._ascend(moved)                                         # θ ← θ + e
        if self.selects:
            after = self.take_pass(closure, backward=False)             # ℓ_a at θ + e
            rows = self._sharpest_rows(after - before, selected)
            if rows is None:
                self.take_pass(closure)                                 # no row above the cutoff
            else:
                self.take_pass(closure, indices=rows)                   # G on the sharpest rows
        else:
            self.take_pass(closure)                                     # G = ∇L_B(θ + e)
        self.restore(moved.params, theta)
        if self.beta < 1:
            self._draw_mask()
        self.base_step()
        return loss

    def _selection_size(self, batch_size: int) -> int:
        """⌊gamma·B⌋, refused when it selects no row (:func:`empty_selection`)."""
        if (problem := empty_selection(self.gamma, batch_size)) is not None:
            raise ValueError(problem)
        return int(batch_size * self.gamma)

    def _ascend(self, moved: ActiveParams) -> None:
        """``θ ← θ + g·(rho/(‖g_kept‖ + 1e-7))/beta`` on kept tensors: the masked tensors' g is
        multiplied by 0 first. The step is built in the gradients, which the next pass overwrites."""
        pairs = [(p.grad, self.state[p]["mask"]) for p in moved.params if "mask" in self.state.get(p, {})]
        if pairs:
            torch._foreach_mul_([grad for grad, _ in pairs], [mask for _, mask in pairs])
        norm = global_norm(moved.grads)
        for entry in moved:
            grads = entry.grads
            torch._foreach_mul_(grads, entry.options["rho"] / (norm + EPS) / self.beta)
            torch._foreach_add_(entry.params, grads)

    @staticmethod
    def _sharpest_rows(sharpness: Tensor, selected: int) -> Tensor | None:
        """The rows strictly above the ``selected``-th largest sharpness, ascending, as a CPU
        LongTensor (reading them is the step's one host synchronisation); None when there is none."""
        cutoff = torch.topk(sharpness, selected).values[-1]
        rows = torch.nonzero(sharpness > cutoff).squeeze(1).cpu()
        return rows if rows.numel() else None

    def _draw_mask(self) -> None:
        """Draw the next step's mask: one uniform per perturbed tensor with a gradient, in
        param-group order, from torch's default CPU generator; kept iff ``u ≤ beta``. A perturbed
        tensor without a gradient gets no draw and is kept."""
        drawn = self.active().perturbed.params
        ids = {id(p) for p in drawn}
        for group in self.param_groups:
            for p in group["params"]:
                if id(p) not in ids and p in self.state:
                    self.state[p].pop("mask", None)
        kept = torch.rand(len(drawn), dtype=torch.float64) <= self.beta
        on_device: dict[torch.device, Tensor] = {}
        for index, p in enumerate(drawn):
            if p.device not in on_device:
                on_device[p.device] = kept.to(p.device, non_blocking=True)
            state = self.state[p]
            if "mask" not in state:
                state["mask"] = torch.ones((), dtype=p.dtype, device=p.device)
            state["mask"].copy_(on_device[p.device][index])
