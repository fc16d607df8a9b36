"""SAM, ASAM and USAM against their formulas (docs/optimizers.md, "SAM", "ASAM", "USAM"), in float64."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from flatmin.optim import SAM, build_optimizer, param_groups
from tests.conftest import make_config
from tests.optim.common import (MODELS, assert_params_equal, batches, closure_for, combine, grad, mlp, norm,
                                parameters, sgd_step)


def test_sam_on_a_quadratic_matches_the_oracle():
    torch.manual_seed(0)
    m = torch.randn(5, 5)
    a = m @ m.T + 0.5 * torch.eye(5)
    theta = nn.Parameter(torch.randn(5))
    rho, lr = 0.05, 0.1
    optimizer = SAM([theta], torch.optim.SGD, rho=rho, lr=lr)
    expected = theta.detach().clone()
    calls = []

    def closure():
        calls.append(1)
        optimizer.zero_grad()
        loss = 0.5 * theta @ a @ theta
        loss.backward()
        return loss

    for _ in range(5):
        g = a @ expected
        oracle = a @ (expected + rho * g / g.norm())          # G = A(θ + rho·Aθ/‖Aθ‖)
        loss = optimizer.step(closure)
        assert torch.allclose(loss, 0.5 * expected @ a @ expected, rtol=1e-14)   # first pass's loss
        assert torch.allclose(theta.grad, oracle, rtol=1e-12, atol=1e-12)
        expected = expected - lr * oracle
        assert torch.allclose(theta.detach(), expected, rtol=1e-12, atol=1e-12)
    assert len(calls) == 10


def transcribe_sam(model: nn.Module, theta, x, y, rho: float, adaptive: bool, eta: float, lr: float):
    """SAM/ASAM from docs/optimizers.md, written out: T = |θ|+eta on weights (ASAM), 1 on biases and for
    SAM; e = rho·T²⊙g/‖T⊙g‖; plain SGD base."""
    g = grad(model, theta, x, y)
    t = {n: (p.abs() + eta) if adaptive and "weight" in n else torch.ones_like(p) for n, p in theta.items()}
    scaled_norm = norm({n: t[n] * g[n] for n in g})
    perturbed = {n: theta[n] + rho * t[n] ** 2 * g[n] / scaled_norm for n in theta}
    return sgd_step(theta, grad(model, perturbed, x, y), lr)


@pytest.mark.parametrize(("adaptive", "eta"), [(False, 0.01), (True, 0.01), (True, 0.0)],
                         ids=["sam", "asam", "asam-eta0"])
def test_sam_and_asam_match_their_formula_over_five_steps_with_biases_exempt(adaptive: bool, eta: float):
    model = mlp()
    rho = 0.5 if adaptive else 0.05
    cfg = OmegaConf.create({"name": "asam" if adaptive else "sam", "method": "sam", "base": "sgd", "rho": rho,
                            "adaptive": adaptive,
                            "eta": eta, "lr": 0.1, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0,
                            "decay_norm_and_bias": True})
    optimizer = build_optimizer(cfg, model)
    assert {g["adaptive"] for g in optimizer.param_groups} == {True, False}
    for x, y in batches(5):
        expected = transcribe_sam(model, parameters(model), x, y, rho=rho, adaptive=adaptive, eta=eta, lr=0.1)
        optimizer.step(closure_for(model, optimizer, x, y, []))
        assert_params_equal(model, expected)


def test_single_file_asam_is_eta_zero_with_every_tensor_adaptive():
    """The widely copied variant: T = |θ| on every tensor, biases included."""
    model = mlp()
    optimizer = SAM(model.parameters(), torch.optim.SGD, rho=2.0, adaptive=True, eta=0.0, lr=0.1)
    x, y = batches(1)[0]
    theta = parameters(model)
    g = grad(model, theta, x, y)
    scaled_norm = norm({n: theta[n].abs() * g[n] for n in g})
    perturbed = {n: theta[n] + 2.0 * theta[n] ** 2 * g[n] / scaled_norm for n in theta}
    optimizer.step(closure_for(model, optimizer, x, y, []))
    assert_params_equal(model, combine((1.0, theta), (-0.1, grad(model, perturbed, x, y))))


def test_single_file_asam_from_the_config_scales_every_tensor(tmp_path):
    cfg = make_config(tmp_path, "optimizer=asam", "optimizer.rho=2.0", "optimizer.eta=0", "optimizer.momentum=0",
                      "optimizer.weight_decay=0", "optimizer.adaptive_tensors=all").optimizer
    from_config, from_class = mlp(), mlp()
    optimizer = build_optimizer(cfg, from_config)
    assert all(group["adaptive"] for group in optimizer.param_groups)
    reference = SAM(from_class.parameters(), torch.optim.SGD, rho=2.0, adaptive=True, eta=0.0, lr=0.1)
    x, y = batches(1)[0]
    optimizer.step(closure_for(from_config, optimizer, x, y, []))
    reference.step(closure_for(from_class, reference, x, y, []))
    for p, q in zip(from_config.parameters(), from_class.parameters()):
        assert torch.equal(p, q)


def test_param_groups_are_shared_with_the_base_optimizer_instance():
    model = mlp()
    base = torch.optim.SGD(model.parameters(), lr=0.1)
    optimizer = SAM(None, base, rho=0.05)
    torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5)   # scales lr at construction
    assert base.param_groups[0]["lr"] == pytest.approx(0.05)
    assert base.param_groups[0]["rho"] == 0.05


# -- USAM: SAM(normalize=False) (docs/optimizers.md, "USAM") ----------------------------------------
def transcribe_usam(model: nn.Module, theta, x, y, rho: float, adaptive: bool, eta: float, lr: float):
    """Unnormalized SAM written out: e = rho·T²⊙g, no norm, no epsilon (T = |θ|+eta on weights for
    the adaptive form, 1 elsewhere); plain SGD base."""
    g = grad(model, theta, x, y)
    t = {n: (p.abs() + eta) if adaptive and "weight" in n else torch.ones_like(p) for n, p in theta.items()}
    perturbed = {n: theta[n] + rho * t[n] ** 2 * g[n] for n in theta}
    return sgd_step(theta, grad(model, perturbed, x, y), lr)


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("adaptive", [False, True], ids=["usam", "usam-adaptive"])
def test_usam_matches_unnormalized_sam(model_name: str, adaptive: bool):
    make_model, make_batches = MODELS[model_name]
    model = make_model()
    groups = param_groups(model, 0.0, True)
    optimizer = SAM(groups, torch.optim.SGD, rho=0.3, adaptive=adaptive, eta=0.01, normalize=False, lr=0.1)
    for x, y in make_batches(5):
        expected = transcribe_usam(model, parameters(model), x, y, rho=0.3, adaptive=adaptive, eta=0.01, lr=0.1)
        optimizer.step(closure_for(model, optimizer, x, y, []))
        assert_params_equal(model, expected)
