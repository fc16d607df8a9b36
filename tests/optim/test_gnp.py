"""GNP (Zhao, Zhang & Hu, ICML 2022; docs/optimizers.md, "GNP and finite-difference GR") against the JAX
release's formula (zhaoyang-0204/gnp@e803362 ``training/training_core.py``, ``get_gnp_gradient``), written out, and
Karakida et al.'s finite-difference gradient regularisation written from their formula, in float64."""

from __future__ import annotations

import pytest
import torch

from flatmin.optim import GNP, SAM
from tests.optim.common import (MODELS, SGD_KWARGS, assert_params_equal, batches, closure_for, combine, grad, mlp,
                                norm, parameters, sgd_step)


def release_gradient(model, params, x, y, r: float, alpha: float, normalize: bool = True,
                     norm_perturbations: bool = False, l2: float = 0.0):
    """``get_gnp_gradient``: ``dual_vector`` divides by ‖g‖ without an epsilon; with
    ``norm_perturbations`` the clean term is that normalised g. ``l2``: the release's ½·l2·Σθ² in
    the loss (flatmin leaves weight decay to the base optimizer). ``normalize=False``: e = r·g."""
    def loss_grad(point):
        g = grad(model, point, x, y)
        return combine((1.0, g), (l2, point)) if l2 else g

    g = loss_grad(params)
    unit = {name: value / norm(g) for name, value in g.items()}
    g2 = loss_grad(combine((1.0, params), (r, unit if normalize else g)))
    return combine((1 - alpha, unit if norm_perturbations else g), (alpha, g2))


def check_five_steps(make_model, make_batches, gradient, **hyper):
    """GNP(**hyper) over plain SGD against ``gradient(model, θ, x, y)`` for 5 steps, 2 passes each."""
    model = make_model()
    optimizer = GNP(model.parameters(), torch.optim.SGD, lr=0.1, **hyper)
    for x, y in make_batches(5):
        expected = sgd_step(parameters(model), gradient(model, parameters(model), x, y), lr=0.1)
        calls: list = []
        optimizer.step(closure_for(model, optimizer, x, y, calls))
        assert len(calls) == 2
        assert_params_equal(model, expected, rtol=1e-11, atol=1e-13)    # ξ = 1e-12 in ‖g‖ + ξ here, none there


SETTINGS = {"recipe": (0.1, 0.8, True), "large-alpha": (0.05, 2.0, True), "unnormalized": (0.02, 0.5, False)}


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_gnp_matches_release_formula(model_name: str, setting: str):
    rho, alpha, normalize = SETTINGS[setting]
    check_five_steps(*MODELS[model_name],
                     lambda model, params, x, y: release_gradient(model, params, x, y, rho, alpha, normalize),
                     rho=rho, alpha=alpha, normalize=normalize)


@pytest.mark.parametrize("model_name", list(MODELS))
def test_gnp_normalize_clean_matches_release_default_flag(model_name: str):
    """``config.gnp.norm_perturbations = True`` (the release's default since 07895f1): c = g/‖g‖."""
    check_five_steps(*MODELS[model_name],
                     lambda model, params, x, y: release_gradient(model, params, x, y, 0.1, 0.8,
                                                                  norm_perturbations=True),
                     rho=0.1, alpha=0.8, normalize_clean=True)


def karakida_gradient(model, params, x, y, gamma: float, eps: float, backward: bool):
    """Gradient regularisation L + (γ/2)‖∇L‖², gradient ∇L + γ·H∇L, with the Hessian-vector product
    by a forward difference, (∇L(θ + ε∇L) − ∇L(θ))/ε (F-GR), or a backward one,
    (∇L(θ) − ∇L(θ − ε∇L))/ε (B-GR) (Karakida et al., ICML 2023)."""
    g = grad(model, params, x, y)
    if backward:
        other = grad(model, combine((1.0, params), (-eps, g)), x, y)
        hessian_g = combine((1 / eps, g), (-1 / eps, other))
    else:
        other = grad(model, combine((1.0, params), (eps, g)), x, y)
        hessian_g = combine((1 / eps, other), (-1 / eps, g))
    return combine((1.0, g), (gamma, hessian_g))


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("backward", [False, True], ids=["F-GR", "B-GR"])
def test_finite_difference_gr_is_unnormalized_gnp(model_name: str, backward: bool):
    gamma, eps = 0.01, 0.1
    sign = -1 if backward else 1
    check_five_steps(*MODELS[model_name],
                     lambda model, params, x, y: karakida_gradient(model, params, x, y, gamma, eps, backward),
                     rho=sign * eps, alpha=sign * gamma / eps, normalize=False)


@pytest.mark.parametrize("normalize", [True, False], ids=["sam", "usam"])
def test_gnp_alpha_one_is_sam(normalize: bool):
    """alpha = 1 takes g2 alone: SAM (USAM without the norm), bit for bit, with no copy of g kept."""
    models = [mlp(), mlp()]
    gnp = GNP(models[0].parameters(), torch.optim.SGD, rho=0.05, alpha=1.0, normalize=normalize, **SGD_KWARGS)
    sam = SAM(models[1].parameters(), torch.optim.SGD, rho=0.05, normalize=normalize, **SGD_KWARGS)
    for x, y in batches(5):
        for model, optimizer in zip(models, (gnp, sam)):
            optimizer.step(closure_for(model, optimizer, x, y, []))
    for p, q in zip(*(model.parameters() for model in models)):
        assert torch.equal(p, q)
    assert set(name for name, _ in gnp._scratch) == {"theta"}


def test_gnp_rho_zero_is_the_base_optimizer_to_rounding():
    """e = 0, so g2 = g and G = (1−alpha)·g + alpha·g = g up to rounding (the release instead runs one
    plain pass when r is not positive)."""
    models = [mlp(), mlp()]
    optimizers = [GNP(models[0].parameters(), torch.optim.SGD, rho=0.0, alpha=0.8, **SGD_KWARGS),
                  torch.optim.SGD(models[1].parameters(), **SGD_KWARGS)]
    for x, y in batches(5):
        for model, optimizer in zip(models, optimizers):
            optimizer.step(closure_for(model, optimizer, x, y, []))
    for p, q in zip(*(model.parameters() for model in models)):
        assert torch.allclose(p, q, rtol=1e-13, atol=1e-15)


def test_weight_decay_and_momentum_are_the_base_optimizers_where_the_release_puts_l2_in_the_loss():
    """Over SGD with momentum and weight decay, G is the formula's without L2 and the base optimizer
    decays θ once. The release's ½·l2·Σθ² in the loss instead adds l2·θ to g (so to the direction of
    e) and l2·(θ + e) to g2: a different step, documented, not offered."""
    rho, alpha, l2 = 0.1, 0.8, 5e-3
    kwargs = {"lr": 0.1, "momentum": 0.9, "weight_decay": l2}
    model = mlp()
    optimizer = GNP(model.parameters(), torch.optim.SGD, rho=rho, alpha=alpha, **kwargs)
    copies = {name: torch.nn.Parameter(p.detach().clone()) for name, p in model.named_parameters()}
    base = torch.optim.SGD(list(copies.values()), **kwargs)
    for x, y in batches(5):
        theta = parameters(model)
        for name, value in release_gradient(model, theta, x, y, rho, alpha).items():
            copies[name].grad = value
        base.step()
        optimizer.step(closure_for(model, optimizer, x, y, []))
        assert_params_equal(model, {name: p.detach() for name, p in copies.items()}, rtol=1e-11, atol=1e-13)
    theta = parameters(model)
    in_the_loss = release_gradient(model, theta, x, y, rho, alpha, l2=l2)
    in_the_base = combine((1.0, release_gradient(model, theta, x, y, rho, alpha)), (l2, theta))   # G + l2·θ
    assert max((in_the_loss[name] - in_the_base[name]).abs().max() for name in theta) > 1e-6


def test_rho_and_alpha_take_any_sign_but_must_be_numbers():
    params = mlp().parameters()
    GNP(params, torch.optim.SGD, rho=-0.1, alpha=-0.5, lr=0.1)
    with pytest.raises(ValueError, match=r"GNP: alpha must be a number \(got 'big'\)"):
        GNP(mlp().parameters(), torch.optim.SGD, alpha="big", lr=0.1)
