"""Adaptive m-sharpness: the inner maximum against the exact trust-region solution on quadratics,
and the measurement on a small network (nothing left changed, the options honoured)."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from torch import Tensor

from flatmin.sharpness import SharpnessOptions, measure_sharpness
from flatmin.sharpness.m_sharpness import worst_case_increase

CPU = torch.device("cpu")


def exact_maximum(gradient: Tensor, hessian: Tensor, rho: float) -> float:
    """``max gᵀu + ½uᵀHu`` over ``‖u‖ ≤ rho`` for a positive semi-definite ``H``: on the sphere,
    ``u = (λI − H)⁻¹g`` with ``λ > λ_max`` found by bisection on ``‖u‖ = rho`` (or ``½rho²λ_max`` when
    ``g = 0``)."""
    eigenvalues, vectors = torch.linalg.eigh(hessian)
    rotated = vectors.T @ gradient
    if rotated.norm() == 0:
        return 0.5 * rho**2 * eigenvalues.max().item()
    low, high = eigenvalues.max().item(), eigenvalues.max().item() + rotated.norm().item() / rho
    for _ in range(200):
        shift = (low + high) / 2
        low, high = (shift, high) if (rotated / (shift - eigenvalues)).norm() > rho else (low, shift)
    u = rotated / (high - eigenvalues)
    return (rotated @ u + 0.5 * u @ (eigenvalues * u)).item()


@pytest.mark.parametrize("norm", ["l2", "adaptive"])
@pytest.mark.parametrize("at_minimum", [True, False], ids=["at-minimum", "off-minimum"])
def test_the_inner_maximum_of_a_quadratic_is_the_trust_region_solution(norm: str, at_minimum: bool):
    generator = torch.Generator().manual_seed(0)
    rotation, _ = torch.linalg.qr(torch.randn(6, 6, generator=generator, dtype=torch.float64))
    curvature = rotation @ torch.diag(torch.tensor([5.0, 2.0, 1.0, 0.5, 0.1, 0.01], dtype=torch.float64)) @ rotation.T
    minimum = torch.randn(6, generator=generator, dtype=torch.float64)
    start = minimum if at_minimum else minimum + 0.2 * torch.randn(6, generator=generator, dtype=torch.float64)
    theta = start.clone().requires_grad_()
    rho = 0.3

    found = worst_case_increase(lambda: 0.5 * (theta - minimum) @ curvature @ (theta - minimum), [theta], rho,
                                steps=20, norm=norm, generator=torch.Generator().manual_seed(1))

    scale = start.abs() if norm == "adaptive" else torch.ones_like(start)   # δ = T u
    exact = exact_maximum(scale * (curvature @ (start - minimum)), scale[:, None] * curvature * scale[None, :], rho)
    assert found == pytest.approx(exact, rel=1e-6)
    assert torch.equal(theta.detach(), start)                                # restored exactly


def test_rho_zero_is_zero_and_an_unknown_norm_is_refused():
    theta = torch.ones(3, requires_grad=True)
    assert worst_case_increase(lambda: (theta**2).sum(), [theta], rho=0.0, steps=5) == 0.0
    with pytest.raises(ValueError, match="norm must be one of adaptive, l2"):
        worst_case_increase(lambda: (theta**2).sum(), [theta], rho=0.1, steps=5, norm="linf")


def test_the_measurement_adds_m_sharpness_and_changes_nothing(trained_tiny):
    model, dataset = copy.deepcopy(trained_tiny)
    model.train()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    rng = torch.get_rng_state()
    options = SharpnessOptions(samples=32, batch_size=32, max_iter=5, m_rho=0.05, m=32, m_samples=96, m_steps=5)

    result = measure_sharpness(model, dataset, options, CPU)

    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert all(module.training for module in model.modules()) and torch.equal(torch.get_rng_state(), rng)
    assert result["m_sharpness"] > 0 and (result["m"], result["m_samples"], result["m_norm"]) == (32, 96, "adaptive")
    wider = measure_sharpness(model, dataset, replace(options, m_rho=0.2), CPU)["m_sharpness"]
    plain = measure_sharpness(model, dataset, replace(options, m_norm="l2"), CPU)["m_sharpness"]
    assert wider > result["m_sharpness"] and plain != result["m_sharpness"]
    assert "m_sharpness" not in measure_sharpness(model, dataset, replace(options, m_rho=0.0), CPU)
