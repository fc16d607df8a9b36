"""NSO against its formula and the oracles of docs/optimizers.md ("NSO"), in float64."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flatmin.optim import NSO
from flatmin.optim.nso import DISTRIBUTIONS, unit_noise
from tests.optim.common import (assert_params_equal, batches, closure_for, combine, loss_and_grad, mlp, parameters,
                                sgd_step)


def quadratic_problem(dim: int = 5):
    torch.manual_seed(0)
    m = torch.randn(dim, dim)
    return m @ m.T + 0.5 * torch.eye(dim), nn.Parameter(torch.randn(dim))


def step_gradient(optimizer: NSO, theta: nn.Parameter, loss_of) -> torch.Tensor:
    """One NSO step on ``loss_of(θ)``; returns the ``G`` it gave the base optimizer."""
    def closure():
        optimizer.zero_grad()
        loss = loss_of(theta)
        loss.backward()
        return loss
    optimizer.step(closure)
    return theta.grad.clone()


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_two_sided_nso_gives_the_exact_gradient_of_a_quadratic_for_any_draw(distribution: str):
    a, theta = quadratic_problem()
    optimizer = NSO([theta], torch.optim.SGD, sigma=0.5, distribution=distribution, lr=0.0)
    one_sided = NSO([theta], torch.optim.SGD, sigma=0.5, two_sided=False, distribution=distribution, lr=0.0)
    for seed in range(5):
        torch.manual_seed(seed)
        g = step_gradient(optimizer, theta, lambda t: 0.5 * t @ a @ t)
        assert torch.allclose(g, a @ theta.detach(), rtol=1e-12, atol=1e-12)
        g = step_gradient(one_sided, theta, lambda t: 0.5 * t @ a @ t)
        assert not torch.allclose(g, a @ theta.detach(), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("two_sided", [True, False], ids=["two-sided", "one-sided"])
@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_mean_gradient_on_the_quartic_matches_the_smoothed_gradient(distribution: str, two_sided: bool):
    """On f(θ) = Σ θᵢ⁴, E[G] = 4(θ³ + 3σ²θ) for any unit-variance symmetric noise. The loss is
    separable, so one step on ``draws`` stacked copies of θ gives ``draws`` independent samples of G."""
    sigma, draws = 0.5, 20_000
    point = torch.tensor([-1.0, -0.3, 0.2, 0.8, 1.5])
    copies = nn.Parameter(point.repeat(draws, 1))
    optimizer = NSO([copies], torch.optim.SGD, sigma=sigma, two_sided=two_sided, distribution=distribution, lr=0.0)
    torch.manual_seed(11)
    samples = step_gradient(optimizer, copies, lambda t: (t ** 4).sum())
    mean, standard_error = samples.mean(0), samples.std(0) / draws ** 0.5
    smoothed = 4 * (point ** 3 + 3 * sigma ** 2 * point)
    assert torch.all((mean - smoothed).abs() < 4 * standard_error)
    assert torch.all((mean - 4 * point ** 3).abs() > 4 * standard_error)     # not the plain gradient


def transcribe_nso(model, theta, x, y, sigma, k, two_sided, lam, lr, seed, clean_always=False):
    """NSO from docs/optimizers.md, written out, with the noise replayed from ``seed``: per perturbation,
    one normal draw per parameter tensor in order. Returns the next θ and the loss ``step`` reports
    (the clean pass's when there is one: lam > 0 or ``clean_always``)."""
    torch.manual_seed(seed)
    loss0, g0 = loss_and_grad(model, theta, x, y)
    total, losses = combine((lam, g0)), []
    passes = 2 * k if two_sided else k
    for _ in range(k):
        u = {name: sigma * torch.randn_like(value) for name, value in theta.items()}
        for side in ((1.0, -1.0) if two_sided else (1.0,)):
            loss, g = loss_and_grad(model, combine((1.0, theta), (side, u)), x, y)
            total = combine((1.0, total), ((1 - lam) / passes, g))
            losses.append(loss)
    return sgd_step(theta, total, lr), (loss0 if lam > 0 or clean_always else torch.stack(losses).mean())


@pytest.mark.parametrize(("k", "two_sided", "lam"), [(1, True, 0.0), (2, True, 0.3), (3, False, 0.0),
                                                     (2, False, 0.5)])
def test_nso_matches_its_formula_over_five_steps(k: int, two_sided: bool, lam: float):
    model = mlp()
    optimizer = NSO(model.parameters(), torch.optim.SGD, sigma=0.05, num_perturbs=k, two_sided=two_sided, lam=lam,
                    lr=0.1)
    for step, (x, y) in enumerate(batches(5)):
        expected, expected_loss = transcribe_nso(model, parameters(model), x, y, sigma=0.05, k=k,
                                                 two_sided=two_sided, lam=lam, lr=0.1, seed=step)
        torch.manual_seed(step)
        calls: list = []
        loss = optimizer.step(closure_for(model, optimizer, x, y, calls))
        assert len(calls) == (2 * k if two_sided else k) + (lam > 0)
        assert torch.allclose(loss, expected_loss, rtol=1e-12)
        assert_params_equal(model, expected)


@pytest.mark.parametrize("lam", [0.0, 0.3])
def test_clean_pass_always_takes_the_release_s_clean_pass_every_step(lam: float):
    """``clean_pass="always"`` (the release's trainer): 2k + 1 passes even at lam = 0, the step
    reports the clean loss, and the update is the formula's, the clean gradient weighted by lam."""
    model = mlp()
    optimizer = NSO(model.parameters(), torch.optim.SGD, sigma=0.05, num_perturbs=2, lam=lam, clean_pass="always",
                    lr=0.1)
    assert optimizer.passes_per_step == 5
    for step, (x, y) in enumerate(batches(3)):
        expected, expected_loss = transcribe_nso(model, parameters(model), x, y, sigma=0.05, k=2, two_sided=True,
                                                 lam=lam, lr=0.1, seed=step, clean_always=True)
        torch.manual_seed(step)
        calls: list = []
        loss = optimizer.step(closure_for(model, optimizer, x, y, calls))
        assert len(calls) == 5
        assert torch.allclose(loss, expected_loss, rtol=1e-12)
        assert_params_equal(model, expected)


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_the_noise_has_zero_mean_and_unit_variance(distribution: str):
    torch.manual_seed(0)
    sample = unit_noise(torch.empty(200_000), distribution)
    assert abs(sample.mean().item()) < 0.01
    assert sample.var().item() == pytest.approx(1.0, abs=0.02)
    assert torch.isfinite(sample).all()
