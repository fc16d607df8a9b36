"""NSO: noise stability optimization (Li, Ju & Zhang, arXiv 2306.08553).

NSO minimises the noise-smoothed loss ``F(θ) = E_U[L(θ+U)]``, U symmetric around 0, by averaging
the gradients at randomly perturbed points (``docs/optimizers.md``, "NSO"):

    U_j = sigma · ε_j,  ε_j i.i.d. per element with unit variance,  j = 1..k
    two-sided:  G = lam·g0 + (1−lam)/(2k) · Σ_j [∇L_B(θ+U_j) + ∇L_B(θ−U_j)]
    one-sided:  G = lam·g0 + (1−lam)/k    · Σ_j  ∇L_B(θ+U_j)

Two-sided pairs cancel the odd terms of the Taylor expansion, so on a quadratic ``G`` is the exact
gradient whatever the draw. Cost: 2k passes (two-sided) or k (one-sided), plus 1 for the clean
pass ``g0`` when ``lam > 0`` or ``clean_pass="always"`` (the release,
VirtuosoResearch/Noise-stability-optimization@bf11dc2 ``exps_on_image_datasets/trainer/nsm_trainer.py``,
takes it every step, with weight lam, and keeps its BatchNorm statistics); 2 extra parameter-sized
buffers (θ and the running sum of ``G``), plus one transient tensor per parameter while a
perturbation is drawn.

Randomness: ε is drawn from torch's default generator of each parameter's device (``torch.randn_like``
and friends), so ``torch.manual_seed`` makes a run reproducible, and a checkpoint that carries the
global RNG state (the trainer's does) resumes the same noise bit for bit. θ−U is formed as
``2θ − (θ+U)``, so no copy of U is kept.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flatmin.checks import BOOLEAN, NON_NEGATIVE, POSITIVE_INT, UNIT_INTERVAL, one_of
from flatmin.optim.hyper import AROUND_TENFOLD, Card, Hyper
from flatmin.optim.multipass import ActiveParams, Closure, MultiPassOptimizer, noise_in_gradients

DISTRIBUTIONS = ("normal", "laplace", "uniform")


def unit_noise(like: Tensor, distribution: str) -> Tensor:
    """Zero-mean, unit-variance i.i.d. noise shaped like ``like``: normal, laplace (scale 1/√2) or
    uniform on ±√3."""
    return fill_unit_noise(torch.empty_like(like), distribution)


def fill_unit_noise(out: Tensor, distribution: str) -> Tensor:
    """:func:`unit_noise` drawn in place into ``out`` (the same generator calls, so the same values as
    ``unit_noise`` of a tensor shaped and laid out like ``out``); laplace holds one sign tensor
    of ``out``'s size meanwhile."""
    if distribution == "normal":
        return out.normal_()
    if distribution == "uniform":
        return out.uniform_(-math.sqrt(3.0), math.sqrt(3.0))
    # Laplace by inversion, as torch.distributions.Laplace does (u = −1 would give log(0)).
    u = out.uniform_(torch.finfo(out.dtype).eps - 1, 1)
    sign = u.sign()
    return u.abs_().neg_().log1p_().mul_(sign).mul_(-1 / math.sqrt(2.0))


class NSO(MultiPassOptimizer, key="nso"):
    """Noise stability optimization over any base optimizer.

    ``sigma`` is an absolute standard deviation, the same for every tensor (BN and biases too);
    defaults are the paper's: sigma 0.01, one two-sided perturbation, lam 0, normal noise.

    ``step`` returns the loss of the clean pass when ``lam > 0``. With ``lam = 0`` there is no clean
    pass: it returns the mean of the perturbed passes' losses. Then the parameters that take part
    are all those that require a gradient (no pass has run yet to say which receive one); any that
    gets no gradient is restored bit for bit and not stepped. Gradient accumulation: each
    micro-batch draws its own noise.
    """

    hyperparameters = {
        "sigma": Hyper(0.01, NON_NEGATIVE, "absolute standard deviation of the noise, the same for every tensor",
                       schedulable=True, search=AROUND_TENFOLD),
        "num_perturbs": Hyper(1, POSITIVE_INT, "k, the noise draws per step", structural=True),
        "two_sided": Hyper(True, BOOLEAN, "evaluate θ + U and θ − U (the odd terms cancel)", structural=True),
        "lam": Hyper(0.0, UNIT_INTERVAL, "weight of the clean gradient g0 in G", schedulable=True),
        "distribution": Hyper("normal", one_of(*DISTRIBUTIONS), "normal | laplace | uniform, unit variance",
                              structural=True),
        "clean_pass": Hyper("when_needed", one_of("when_needed", "always"),
                            "when_needed: only if lam > 0; always: the release's, every step (its BatchNorm "
                            "statistics and its loss are the clean pass's even at lam = 0)", structural=True),
    }
    card = Card("NSO", "2k two-sided, k one-sided, +1 if `lam > 0` or `clean_pass: always`", "2 (θ, the sum G)",
                "Li, Ju & Zhang, arXiv 2306.08553")

    @property
    def perturbed_passes(self) -> int:
        """2k two-sided, k one-sided."""
        return self.num_perturbs * (2 if self.two_sided else 1)

    @property
    def passes_per_step(self) -> int:  # type: ignore[override]
        return self.perturbed_passes + int(self._clean_pass())

    def _clean_pass(self) -> bool:
        return self.clean_pass == "always" or any(group["lam"] > 0 for group in self.param_groups)

    @torch.no_grad()
    def step(self, closure: Closure) -> Tensor:  # type: ignore[override]
        """The clean pass (lam > 0) and the perturbed passes, then the base step with their mean."""
        clean = self._clean_pass()
        if clean:
            loss = self.take_pass(closure)                      # g0 = ∇L_B(θ)
        active = self.active(with_grad=clean)
        moved = active.perturbed
        theta = self.save("theta", moved.params, moved.params)
        self._start_sum(active, clean)                          # G ← lam·g0, or 0
        losses = []
        for _ in range(self.num_perturbs):
            self._perturb(moved)                                # θ + U_j
            losses.append(self.take_pass(closure))
            self._add_to_sum()
            if self.two_sided:
                self._reflect(moved.params, theta)              # θ − U_j = 2θ − (θ + U_j)
                losses.append(self.take_pass(closure))
                self._add_to_sum()
            self.restore(moved.params, theta)
        for entry in self.active():                             # .grad ← G
            torch._foreach_copy_(entry.grads, self.buffers("G", entry.params))
        self.base_step()
        return loss if clean else torch.stack(losses).mean()

    def _start_sum(self, active: ActiveParams, clean: bool) -> None:
        """G ← lam·g0 after the clean pass, else G ← 0."""
        for entry in active:
            total = self.buffers("G", entry.params)
            if clean:
                torch._foreach_copy_(total, entry.grads)
                torch._foreach_mul_(total, entry.options["lam"])
            else:
                torch._foreach_zero_(total)

    def _perturb(self, active: ActiveParams) -> None:
        """θ ← θ + sigma·ε, a fresh draw of ε per tensor, in param-group order. ε is drawn in place into
        the tensor's ``.grad``, free here (the pass before has been summed into G, or there was none)
        and overwritten by the next pass; a tensor without one gets a transient tensor instead."""
        for entry in active:
            noise = noise_in_gradients(entry.params, lambda out: fill_unit_noise(out, self.distribution))
            torch._foreach_add_(entry.params, noise, alpha=entry.options["sigma"])

    @staticmethod
    def _reflect(params: list[Tensor], theta: list[Tensor]) -> None:
        """θ + U → θ − U, as 2θ − (θ + U), so that U need not be kept."""
        if not params:
            return
        torch._foreach_mul_(params, -1.0)
        torch._foreach_add_(params, theta, alpha=2.0)

    def _add_to_sum(self) -> None:
        """G += (1−lam)/(2k or k) · the gradient of the pass just taken."""
        for entry in self.active():
            weight = (1 - entry.options["lam"]) / self.perturbed_passes
            torch._foreach_add_(self.buffers("G", entry.params), entry.grads, alpha=weight)
