"""Worst-case and average sharpness (Andriushchenko, Croce, Müller, Hein & Flammarion, "A modern look
at the relationship between sharpness and generalization", ICML 2023), as released in
tml-epfl/sharpness-vs-generalization @ 6d73be9: ``sharpness.py`` ``weight_ascent_step_momentum``
(58-169), ``eval_APGD_sharpness`` (172-317), ``eval_average_sharpness`` (320-397), ``random_init_lw``
(42-55); ``models.py`` ``LogitNormalizationWrapper`` (251-264).

Worst-case: ``mean_b [max_{δ ∈ Δ} L_b(w + δ) − L_b(w)]``, the maximum searched by the release's m-APGD
without random start (one restart, momentum 0.75, min_update_ratio 0.75, halving factor 0.5) in the
box ``|δ| ≤ ρ s`` (``linf``) or the ball / ellipsoid ``‖δ / s‖ ≤ ρ`` (``l2``), ``s = |w|`` when
``adaptive`` else 1. Average: ``mean_b [mean_t L_b(w + δ_t) − L_b(w)]`` over Gaussian (``l2``) or
uniform (``linf``) noise scaled by ``ρ s``.

Where the release is ambiguous or wrong, flatmin:
 4. takes as "momentum" the code's ``0.75 z + 0.25 δ_prev`` (δ before the current one), not the APGD
    update of its docstring;
 5. on a halving reloads the best parameters but keeps δ and δ_prev: the next gradient is taken at
    the best point, the next iterate built from the current δ;
 6. computes the checkpoints in floats as the code does (steps 20: 5, 9, 12, 15, 16, 18, 19, 20;
    steps 10: 3, 5, 6, 8, 8);
 7. counts entries with ``|w| = 0`` as 0 in the ellipsoid norm (the release gets NaN there and skips
    the projection); their δ is always 0;
 8. stops the ellipsoid bisection at ``|‖t‖ − ρ| ≤ 1e-5``, absolute, as the release;
 9. computes the error in the model's dtype (the release: float32);
10. takes the l2 gradient norm over the perturbed tensors (the release: every named parameter);
11. normalises the logits once (``normalize_logits``), perturbs BatchNorm's affine parameters but
    never its running statistics, and averages over batches without weights, whatever their sizes.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from flatmin.checks import BOOLEAN, NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, one_of
from flatmin.optim.multipass import global_norm
from flatmin.sharpness.arguments import class_indices, require
from flatmin.sharpness.hessian import LossFn, to_device
from flatmin.sharpness.untouched import left_as_found

Batches = Sequence[tuple[Any, Tensor]]
Objective = Callable[[], tuple[Tensor, Tensor]]   # () ↦ (loss, outputs) at the parameters as they are
MOMENTUM = 0.75
MIN_UPDATE_RATIO = 0.75
BISECTION_TOLERANCE = 1e-5


def worst_case_sharpness(model: nn.Module, loss_fn: LossFn, batches: Batches, rho: float, norm: str = "linf",
                         adaptive: bool = False, steps: int = 20, *, step_size_mult: float = 1.0,
                         params: Sequence[Tensor] | None = None, normalize_logits: bool = False) -> dict:
    """``{"sharpness", "error_increase", "delta_norm"}``: the mean over ``batches`` of the largest loss
    (and the error there) found by ``steps`` m-APGD steps in the ``norm`` ball of radius ``rho``, less
    the loss at the weights, and the largest ``‖δ‖`` of a batch's best point. ``error_increase`` is
    None when the targets are not class indices."""
    require("rho", rho, NON_NEGATIVE)
    require("norm", norm, one_of("linf", "l2"))
    require("adaptive", adaptive, BOOLEAN)
    require("steps", steps, NON_NEGATIVE_INT)
    require("step_size_mult", step_size_mult, POSITIVE)
    require("normalize_logits", normalize_logits, BOOLEAN)
    _require_batches(batches)
    params = _perturbed(model, params)
    classes = all(class_indices(targets) for _, targets in batches)
    if rho == 0 or steps == 0:
        return {"sharpness": 0.0, "error_increase": 0.0 if classes else None, "delta_norm": 0.0}
    checkpoints = apgd_checkpoints(steps)
    with left_as_found(model):
        origin = [p.detach().clone() for p in params]
        scales = [w.abs() if adaptive else torch.ones_like(w) for w in origin]
        device = next(model.parameters()).device
        worst_total, clean_total, worst_errors, clean_errors, delta_norm = 0.0, 0.0, 0.0, 0.0, 0.0
        for inputs, targets in batches:
            inputs, targets = to_device(inputs, device), targets.to(device)
            loss = _objective(model, loss_fn, inputs, targets, normalize_logits)
            clean, clean_error = _evaluate(loss, targets, classes)
            search = _Ascent(params, origin, scales, rho, norm, adaptive, 2 * rho * step_size_mult)
            worst, worst_error, worst_norm = search.run(loss, targets, classes, steps, checkpoints, clean, clean_error)
            worst_total, clean_total = worst_total + worst, clean_total + clean
            worst_errors, clean_errors = worst_errors + worst_error, clean_errors + clean_error
            delta_norm = max(delta_norm, worst_norm)
    count = len(batches)
    return {"sharpness": (worst_total - clean_total) / count,
            "error_increase": (worst_errors - clean_errors) / count if classes else None,
            "delta_norm": delta_norm}


def average_sharpness(model: nn.Module, loss_fn: LossFn, batches: Batches, rho: float, draws: int = 100,
                      norm: str = "l2", adaptive: bool = False, *, params: Sequence[Tensor] | None = None,
                      normalize_logits: bool = False, generator: torch.Generator | None = None) -> dict:
    """``{"sharpness", "error_increase"}``: the mean over ``batches`` of the mean loss (and error) at
    ``draws`` noisy weights ``w + ξ ρ s`` (``ξ`` standard normal for ``l2``, uniform in [−1, 1] for
    ``linf``, drawn from ``generator``), less the loss at the weights."""
    require("rho", rho, NON_NEGATIVE)
    require("draws", draws, POSITIVE_INT)
    require("norm", norm, one_of("l2", "linf"))
    require("adaptive", adaptive, BOOLEAN)
    require("normalize_logits", normalize_logits, BOOLEAN)
    _require_batches(batches)
    params = _perturbed(model, params)
    classes = all(class_indices(targets) for _, targets in batches)
    with left_as_found(model), torch.no_grad():
        origin = [p.detach().clone() for p in params]
        scales = [rho * w.abs() for w in origin] if adaptive else [rho] * len(origin)
        device = next(model.parameters()).device
        noisy_total, clean_total, noisy_errors, clean_errors = 0.0, 0.0, 0.0, 0.0
        for inputs, targets in batches:
            inputs, targets = to_device(inputs, device), targets.to(device)
            loss = _objective(model, loss_fn, inputs, targets, normalize_logits)
            clean, clean_error = _evaluate(loss, targets, classes)
            batch_loss, batch_error = 0.0, 0.0
            for _ in range(draws):
                noise = [_noise(p, norm, generator) for p in params]
                for p, w, xi, scale in zip(params, origin, noise, scales):
                    p.copy_(w + xi * scale)
                value, error = _evaluate(loss, targets, classes)
                batch_loss, batch_error = batch_loss + value, batch_error + error
            torch._foreach_copy_(params, origin)
            noisy_total, clean_total = noisy_total + batch_loss / draws, clean_total + clean
            noisy_errors, clean_errors = noisy_errors + batch_error / draws, clean_errors + clean_error
    count = len(batches)
    return {"sharpness": (noisy_total - clean_total) / count,
            "error_increase": (noisy_errors - clean_errors) / count if classes else None}


def apgd_checkpoints(steps: int) -> list[int]:
    """The iterations at which m-APGD may halve its step (``sharpness.py`` 205-213, in Python floats)."""
    fractions, checkpoints = [0, 0.22], [0, math.ceil(steps * 0.22)]
    while checkpoints[-1] < steps and checkpoints[-1] != checkpoints[-2]:
        fractions.append(fractions[-1] + max(fractions[-1] - fractions[-2] - 0.03, 0.06))
        checkpoints.append(math.ceil(fractions[-1] * steps))
    return checkpoints[1:]


class _Ascent:
    """One batch's m-APGD search (``eval_APGD_sharpness`` 233-295, ``weight_ascent_step_momentum``)."""

    def __init__(self, params: list[Tensor], origin: list[Tensor], scales: list[Tensor], rho: float, norm: str,
                 adaptive: bool, step_size: float) -> None:
        self.params, self.origin, self.scales = params, origin, scales
        self.rho, self.norm, self.adaptive, self.step_size = rho, norm, adaptive, step_size
        self.delta = [torch.zeros_like(w) for w in origin]
        self.previous = [torch.zeros_like(w) for w in origin]

    def run(self, loss: Objective, targets: Tensor, classes: bool, steps: int, checkpoints: list[int],
            clean: float, clean_error: float) -> tuple[float, float, float]:
        """The best loss, its error and its ``‖δ‖`` over ``steps`` steps; the parameters end at ``w``."""
        worst, worst_error, worst_norm, best_params = clean, clean_error, 0.0, self.origin
        previous_step, previous_worst, previous_checkpoint, updates = self.step_size, clean, 0, 0
        for i in range(steps):
            self.step(loss)
            value, error = _evaluate(loss, targets, classes)
            if value > worst:
                worst, worst_error, worst_norm = value, error, global_norm(self.delta).item()
                best_params = [p.detach().clone() for p in self.params]
                updates += 1
            if i in checkpoints:
                halve = (updates < MIN_UPDATE_RATIO * (i - previous_checkpoint)
                         or (previous_step == self.step_size and previous_worst == worst))
                previous_step, previous_worst, previous_checkpoint, updates = self.step_size, worst, i, 0
                if halve:
                    self.step_size *= 0.5
                    with torch.no_grad():
                        torch._foreach_copy_(self.params, best_params)
        with torch.no_grad():
            torch._foreach_copy_(self.params, self.origin)
        return worst, worst_error, worst_norm

    def step(self, loss: Objective) -> None:
        """A gradient step from δ, the projection onto Δ, the momentum ``0.75 z + 0.25 δ_prev``, and the
        parameters moved to ``w + δ``."""
        with torch.enable_grad():
            gradients = torch.autograd.grad(loss()[0], self.params, materialize_grads=True)
        with torch.no_grad():
            if self.norm == "linf":
                z = [torch.max(torch.min(d + self.step_size * g.sign() * s, s * self.rho), -1. * s * self.rho)
                     for d, g, s in zip(self.delta, gradients, self.scales)]
            else:
                gradient_norm = sum([g.norm() ** 2 for g in gradients]) ** 0.5
                z = self._project([d + self.step_size / (gradient_norm + 1e-12) * g * s
                                   for d, g, s in zip(self.delta, gradients, self.scales)])
            backup = self.delta
            self.delta = [MOMENTUM * a + (1 - MOMENTUM) * b for a, b in zip(z, self.previous)]
            self.previous = backup
            for p, w, d in zip(self.params, self.origin, self.delta):
                p.copy_(w + d)

    def _project(self, z: list[Tensor]) -> list[Tensor]:
        """``z`` onto the ball ``‖z / s‖ ≤ ρ``: rescaled when ``s = 1``, else the ellipsoid's bisection on
        the multiplier ``λ`` of ``z / (1 + 2λ / s²)`` (``sharpness.py`` 115-145)."""
        length = _scaled_norm(z, self.scales)
        if length <= self.rho:
            return z
        if not self.adaptive:
            return [t * (self.rho / length) for t in z]
        inverse_squares = [(1 / s) ** 2 for s in self.scales]
        multiplier, low, high, limit = 0.1, 0.0, 10.0, 10.0
        projected = z
        while (length - self.rho).abs() > BISECTION_TOLERANCE:
            projected = [t / (1 + 2 * multiplier * c) for t, c in zip(z, inverse_squares)]
            length = _scaled_norm(projected, self.scales)
            if length > self.rho:
                multiplier, low = (multiplier + high) / 2, multiplier
            else:
                multiplier, high = (low + multiplier) / 2, multiplier
            if limit - high < 1e-2:
                limit, high = limit * 2, high * 2
        return projected


def _scaled_norm(vectors: list[Tensor], scales: list[Tensor]) -> Tensor:
    """``(Σ (t / s)²)^0.5``, entries with ``s = 0`` counting 0 (§9 item 7)."""
    return sum([(torch.where(s == 0, 0.0, t / s) ** 2).sum() for t, s in zip(vectors, scales)]) ** 0.5


def _objective(model: nn.Module, loss_fn: LossFn, inputs: Any, targets: Tensor, normalize_logits: bool) -> Objective:
    """``() ↦ (loss, outputs)`` at the parameters as they are; outputs logit-normalised if asked."""

    def evaluate() -> tuple[Tensor, Tensor]:
        outputs = model(inputs)
        if normalize_logits:
            outputs = outputs - outputs.mean(dim=-1, keepdim=True)
            outputs = outputs / torch.clamp_min(outputs.norm(dim=-1, keepdim=True), 1e-10)
        return loss_fn(outputs, targets), outputs

    return evaluate


def _evaluate(loss: Objective, targets: Tensor, classes: bool) -> tuple[float, float]:
    """The loss and (for class targets, else 0) the error, without gradients."""
    with torch.no_grad():
        value, outputs = loss()
        error = (outputs.argmax(dim=1) != targets).to(outputs.dtype).mean().item() if classes else 0.0
    return value.item(), error


def _noise(p: Tensor, norm: str, generator: torch.Generator | None) -> Tensor:
    """``random_init_lw``'s draw for one tensor: standard normal (``l2``) or uniform in [−1, 1] (``linf``)."""
    if norm == "l2":
        return torch.randn(p.shape, generator=generator, dtype=p.dtype, device=p.device)
    return 2 * torch.rand(p.shape, generator=generator, dtype=p.dtype, device=p.device) - 1


def _perturbed(model: nn.Module, params: Sequence[Tensor] | None) -> list[Tensor]:
    """The tensors to perturb: ``params``, or every parameter with ``requires_grad`` in model order."""
    if params is None:
        return [p for p in model.parameters() if p.requires_grad]
    owned = {id(p) for p in model.parameters()}
    if (isinstance(params, Tensor) or not isinstance(params, Sequence) or not params
            or not all(isinstance(p, Tensor) and id(p) in owned and p.requires_grad for p in params)):
        raise ValueError("params must be None or a non-empty list of the model's parameters that require "
                         f"gradients (got {_describe(params)}).")
    return list(params)


def _describe(value: Any) -> str:
    """A short description of a bad ``params`` (not the tensors' values)."""
    if isinstance(value, Sequence) and not isinstance(value, (str, Tensor)):
        return f"a {type(value).__name__} of {len(value)} items"
    return type(value).__name__



def _require_batches(batches: Batches) -> None:
    if not isinstance(batches, Sequence) or len(batches) == 0:
        raise ValueError(f"batches must be a non-empty sequence of (inputs, targets) (got {_describe(batches)}).")

