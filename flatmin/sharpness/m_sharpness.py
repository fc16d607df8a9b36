"""Adaptive m-sharpness (Andriushchenko & Flammarion, ICML 2022, eq. 3; the adaptive ball of Kwon
et al., ASAM, ICML 2021): the largest increase of a batch's loss within a ball of radius ``rho``
around the weights ``w``, averaged over the ``n / m`` batches of ``m`` examples of a fixed subset::

    S = mean over batches B of  max_{‖T⁻¹δ‖₂ ≤ rho}  L_B(w + δ) − L_B(w),

with ``T = diag(|w|)`` for the adaptive ball and ``T = I`` for the plain L2 ball. The inner maximum
is searched by projected, normalised gradient ascent in ``u = T⁻¹δ`` (``steps`` gradients, a seeded
random start on the sphere, the step ``rho``), keeping the best value seen. Any ascent gives a lower
bound of the maximum; on a quadratic this one reaches it (the tests check against the exact
trust-region solution). Andriushchenko & Flammarion use Auto-PGD for the same search.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from flatmin.optim.multipass import NORM_EPS, global_norm
from flatmin.sharpness.hessian import LossFn, to_device

NORMS = ("adaptive", "l2")


def worst_case_increase(loss_at: Callable[[], Tensor], params: Sequence[Tensor], rho: float, steps: int,
                        norm: str = "adaptive", generator: torch.Generator | None = None) -> float:
    """``max L(w + Tu) − L(w)`` over ``‖u‖₂ ≤ rho`` (a lower bound, by ``steps`` ascent steps), where
    ``loss_at()`` evaluates the loss at the current ``params``. The parameters are restored exactly."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)} (got {norm!r}).")
    if rho == 0 or steps == 0:
        return 0.0
    original = [p.detach().clone() for p in params]
    scales = [w.abs() for w in original] if norm == "adaptive" else [torch.ones_like(w) for w in original]
    with torch.no_grad():
        clean = loss_at().item()
    direction = [torch.randn(p.shape, generator=generator, device=p.device, dtype=p.dtype) for p in params]
    u = torch._foreach_mul(direction, rho / global_norm(direction).item())
    best = float("-inf")
    try:
        for _ in range(steps):
            _place(params, original, scales, u)
            loss = loss_at()
            best = max(best, loss.item() - clean)
            gradient_u = torch._foreach_mul(torch.autograd.grad(loss, params), scales)  # d/du of L(w + T u)
            torch._foreach_add_(u, gradient_u, alpha=rho / (global_norm(gradient_u).item() + NORM_EPS))
            torch._foreach_mul_(u, min(1.0, rho / global_norm(u).item()))              # back into the ball
        _place(params, original, scales, u)
        with torch.no_grad():
            best = max(best, loss_at().item() - clean)
    finally:
        with torch.no_grad():
            torch._foreach_copy_(list(params), original)
    return best


def m_sharpness(model: nn.Module, loss_fn: LossFn, batches: Sequence[tuple[Any, Tensor]], params: Sequence[Tensor],
                device: torch.device, rho: float, steps: int, norm: str = "adaptive",
                generator: torch.Generator | None = None) -> float:
    """The mean over ``batches`` (each of ``m`` examples, weighted by its size) of each batch's
    :func:`worst_case_increase`; the model is evaluated as it is (the caller sets eval mode)."""
    total = sum(len(targets) for _, targets in batches)
    mean = 0.0
    for inputs, targets in batches:
        inputs, targets = to_device(inputs, device), targets.to(device)
        increase = worst_case_increase(lambda: loss_fn(model(inputs), targets), params, rho, steps, norm, generator)
        mean += increase * len(targets) / total
    return mean


def _place(params: Sequence[Tensor], original: Sequence[Tensor], scales: Sequence[Tensor], u: Sequence[Tensor]) -> None:
    """``params = original + scales * u``, in place."""
    with torch.no_grad():
        torch._foreach_copy_(list(params), original)
        torch._foreach_addcmul_(list(params), scales, u)
