"""MSAM (docs/optimizers.md, "MSAM") against the release (MarlonBecker/MSAM@780fa4f ``optimizer/msam.py``,
``optimizer/adamW_msam.py``) written out in float64, the perturbed point's BatchNorm statistics, and
the base optimizers it accepts."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from flatmin.errors import ConfigError
from flatmin.optim import MSAM, build_optimizer, param_groups
from tests.conftest import make_config
from tests.optim.common import (MODELS, assert_params_equal, batches, closure_for, combine, grad, mlp, norm,
                                parameters, stepper_for, train)

#: The release's epsilon (flatmin's NORM_EPS is the same).
RELEASE_EPS = 1e-12


def zeros_like(theta):
    return {n: torch.zeros_like(p) for n, p in theta.items()}


def release_sgd_msam(model: nn.Module, theta, data, rho: float, lr: float, momentum: float, wd: float,
                     decay_at_theta: bool = False):
    """The release's ``MSAM`` (its own SGD) written out: the parameters *stay* at
    θ̃ = θ − rho·v/(‖v‖+1e-12) between steps (momentum buffers start at zero, so θ̃ = θ before the
    first step); a step takes the gradient there, adds ``wd·θ̃`` (``decay_at_theta``: ``wd·θ``,
    torch's SGD at θ), moves back to θ, steps with momentum (no nesterov, no dampening) and moves
    up along the new buffer. Returns, after each step, the weights it evaluates (moved back: θ)."""
    stored, buffer, inverse_norm, evaluated = dict(theta), zeros_like(theta), 0.0, []
    for x, y in data:
        g = grad(model, stored, x, y)
        current = combine((1.0, stored), (rho * inverse_norm, buffer))       # move back: θ
        d = combine((1.0, g), (wd, current if decay_at_theta else stored))
        buffer = combine((momentum, buffer), (1.0, d))
        current = combine((1.0, current), (-lr, buffer))
        inverse_norm = 1 / (norm(buffer) + RELEASE_EPS)
        stored = combine((1.0, current), (-rho * inverse_norm, buffer))      # move up: θ̃
        evaluated.append(combine((1.0, stored), (rho * inverse_norm, buffer)))   # move_back_from_momentumAscent
    return evaluated


def release_adamw_msam(model: nn.Module, theta, data, rho: float, lr: float, betas: tuple[float, float],
                       eps: float, wd: float, decay_after_update: bool = True):
    """The release's ``AdamW_MSAM`` written out, the same way: back to θ by ``+rho·m/‖m‖``, Adam's
    moments from the gradient at θ̃, the update, the decay ``θ·(1 − lr·wd)`` *after* it
    (``decay_after_update=False``: before it, as torch's AdamW), then up along the new m."""
    beta1, beta2 = betas
    stored, m, s, factor, evaluated = dict(theta), zeros_like(theta), zeros_like(theta), 0.0, []
    for t, (x, y) in enumerate(data, start=1):
        g = grad(model, stored, x, y)
        current = combine((1.0, stored), (factor, m))
        if not decay_after_update:
            current = {n: p * (1 - lr * wd) for n, p in current.items()}
        m = combine((beta1, m), (1 - beta1, g))
        s = {n: beta2 * s[n] + (1 - beta2) * g[n] * g[n] for n in s}
        step_size = lr / (1 - beta1 ** t)
        current = {n: current[n] - step_size * m[n] / (s[n].sqrt() / (1 - beta2 ** t) ** 0.5 + eps) for n in m}
        if decay_after_update:
            current = {n: p * (1 - lr * wd) for n, p in current.items()}
        factor = rho / (norm(m) + RELEASE_EPS)
        stored = combine((1.0, current), (-factor, m))
        evaluated.append(combine((1.0, stored), (factor, m)))
    return evaluated


def run_msam(model: nn.Module, optimizer: torch.optim.Optimizer, data, expected, rounding_noise: float = 0.0) -> None:
    """Step through ``data``; after each step the parameters (θ, between steps) must be the
    release's evaluation weights, to float64 rounding (plus ``rounding_noise`` for the conv net's
    bias ahead of BatchNorm, whose gradient is 0 up to rounding: Adam divides that noise by eps)."""
    for batch, theta in zip(data, expected):
        assert train(model, optimizer, [batch]) == 1
        for name, p in model.named_parameters():
            atol = rounding_noise if isinstance(model[0], nn.Conv2d) and name == "0.bias" else 1e-13
            assert torch.allclose(p.detach(), theta[name], rtol=1e-12, atol=max(atol, 1e-13)), name


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("rho", [0.3, 3.0])
def test_msam_matches_release_over_sgd(model_name: str, rho: float):
    make_model, make_batches = MODELS[model_name]
    model, data = make_model(), make_batches(6)
    expected = release_sgd_msam(model, parameters(model), data, rho=rho, lr=0.1, momentum=0.9, wd=0.0)
    optimizer = MSAM(model.parameters(), torch.optim.SGD, rho=rho, lr=0.1, momentum=0.9)
    run_msam(model, optimizer, data, expected)      # between steps flatmin holds θ: the release's evaluation weights


@pytest.mark.parametrize("model_name", list(MODELS))
def test_msam_matches_release_over_adamw(model_name: str):
    make_model, make_batches = MODELS[model_name]
    data, betas = make_batches(6), (0.9, 0.999)
    for wd in (0.0, 0.1):
        model = make_model()
        theta = parameters(model)
        release = release_adamw_msam(model, theta, data, rho=1.0, lr=0.01, betas=betas, eps=1e-8, wd=wd)
        torch_order = release_adamw_msam(model, theta, data, rho=1.0, lr=0.01, betas=betas, eps=1e-8, wd=wd,
                                         decay_after_update=False)
        optimizer = MSAM(model.parameters(), torch.optim.AdamW, rho=1.0, lr=0.01, betas=betas, eps=1e-8,
                         weight_decay=wd)
        run_msam(model, optimizer, data, torch_order, rounding_noise=1e-9)
        gap = max((release[-1][n] - torch_order[-1][n]).abs().max().item() for n in theta)
        # AdamW_MSAM decays after the update, torch's AdamW before it: equal at wd = 0 only.
        assert (gap == 0) if wd == 0 else (gap > 1e-7), gap


@pytest.mark.parametrize("model_name", list(MODELS))
def test_msam_decays_weights_at_theta_where_the_release_decays_the_perturbed_point(model_name: str):
    make_model, make_batches = MODELS[model_name]
    model, data = make_model(), make_batches(6)
    theta = parameters(model)
    kwargs = {"rho": 0.5, "lr": 0.1, "momentum": 0.9, "wd": 0.05}
    release = release_sgd_msam(model, theta, data, **kwargs)
    at_theta = release_sgd_msam(model, theta, data, **kwargs, decay_at_theta=True)
    optimizer = MSAM(model.parameters(), torch.optim.SGD, rho=0.5, lr=0.1, momentum=0.9, weight_decay=0.05)
    run_msam(model, optimizer, data, at_theta)
    gap = max((release[-1][n] - at_theta[-1][n]).abs().max().item() for n in theta)
    assert gap > 1e-6, gap                          # wd·(θ̃ − θ) = −wd·rho·v/‖v‖ in every gradient


def test_msam_honours_perturb_groups():
    """Only the perturbed groups move; ‖v‖ is over their moments."""
    model, data = MODELS["convbn"][0](), MODELS["convbn"][1](5)
    groups = param_groups(model, 0.0, True, perturb_tensors="no_norm")
    on = {name for name, p in model.named_parameters() for group in groups
          if group["perturb"] and any(p is q for q in group["params"])}
    assert on and on != set(parameters(model))
    optimizer = MSAM(groups, torch.optim.SGD, rho=1.0, lr=0.1, momentum=0.9)
    theta, v = parameters(model), None
    for x, y in data:
        if v is None:
            tilde = theta
        else:
            scale = 1.0 / (norm({n: v[n] for n in on}) + RELEASE_EPS)
            tilde = {n: theta[n] - (scale * v[n] if n in on else 0) for n in theta}
        g = grad(model, tilde, x, y)
        v = g if v is None else combine((0.9, v), (1.0, g))
        theta = combine((1.0, theta), (-0.1, v))
        optimizer.step(closure_for(model, optimizer, x, y, []))
        assert_params_equal(model, theta)


def test_msam_batchnorm_statistics_are_those_of_the_perturbed_point():
    """The only pass is at θ̃: on the second step (the first has no moment, so θ̃ = θ) BN's running
    statistics are updated by a forward at θ − rho·v/‖v‖."""
    (x1, y1), (x2, y2) = batches(2)
    model = mlp(batchnorm=True)
    optimizer = MSAM(model.parameters(), torch.optim.SGD, rho=2.0, lr=0.1, momentum=0.9)
    runner = stepper_for(model, optimizer)
    runner.step(x1, y1)
    reference, at_theta = copy.deepcopy(model), copy.deepcopy(model)
    moments = [optimizer.base_optimizer.state[p]["momentum_buffer"] for p in model.parameters()]
    scale = 2.0 / (torch.linalg.vector_norm(torch.cat([m.flatten() for m in moments])) + RELEASE_EPS)
    with torch.no_grad():
        for p, m in zip(reference.parameters(), moments):
            p.sub_(scale * m)
        for net in (reference, at_theta):
            net.train()
            net(x2)
    runner.step(x2, y2)
    assert runner.passes == 2
    buffers = dict(model.named_buffers())
    for key, buffer in reference.named_buffers():
        assert torch.allclose(buffer, buffers[key], rtol=1e-12, atol=1e-14), key
    assert not torch.allclose(at_theta[1].running_mean, model[1].running_mean)       # not those of θ


@pytest.mark.parametrize("base", ["sgd", "adamw"])
def test_msam_rho_zero_is_the_base_optimizer_and_needs_a_first_moment(base: str):
    kwargs = {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4} if base == "sgd" else {"lr": 0.01,
                                                                                       "weight_decay": 0.1}
    base_class = torch.optim.SGD if base == "sgd" else torch.optim.AdamW
    data = batches(8)
    models = [mlp(batchnorm=True), mlp(batchnorm=True)]
    for model, optimizer in zip(models, (base_class(models[0].parameters(), **kwargs),
                                         MSAM(models[1].parameters(), base_class, rho=0.0, **kwargs))):
        runner = stepper_for(model, optimizer)
        for x, y in data:
            runner.step(x, y)
    for a, b in zip(models[0].state_dict().values(), models[1].state_dict().values()):
        assert torch.equal(a, b)
    # Without a first moment there is nothing to perturb along.
    for make in (lambda: MSAM(mlp().parameters(), torch.optim.SGD, lr=0.1),
                 lambda: MSAM(mlp().parameters(), torch.optim.RMSprop, lr=0.1),
                 lambda: MSAM(None, torch.optim.SGD([{"params": [nn.Parameter(torch.ones(2))], "momentum": 0.0},
                                                     {"params": [nn.Parameter(torch.ones(2))]}],
                                                    lr=0.1, momentum=0.9))):
        with pytest.raises(ValueError, match="needs SGD with momentum > 0 or Adam/AdamW"):
            make()
    MSAM(mlp().parameters(), torch.optim.Adam, lr=0.01)


def test_msam_over_sgd_without_momentum_is_a_config_error(tmp_path):
    cfg = make_config(tmp_path, "optimizer=msam", "optimizer.momentum=0").optimizer
    with pytest.raises(ConfigError, match=r"optimizer 'msam' \(msam over sgd\) refuses these settings: MSAM "
                                          r".*SGD with momentum > 0 or Adam/AdamW as its base \(got SGD with momentum "
                                          r"0\)\.$"):
        build_optimizer(cfg, mlp())
    adamw = make_config(tmp_path, "optimizer=msam", "optimizer.base=adamw", "optimizer.lr=1e-3").optimizer
    assert isinstance(build_optimizer(adamw, mlp()), MSAM)
