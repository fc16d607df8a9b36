"""GSAM (docs/optimizers.md, "GSAM") against oracles transcribed from its two releases, in float64:
the PyTorch release's formulas (juntang-zhuang/GSAM@a770275 gsam/gsam.py: perturb_weights,
gradient_decompose) and big_vision's min(f, h) (big_vision@0127fb6
big_vision/trainers/proj/gsam/gsam.py, gsam_gradient with minimize_fp=False); and against
pytorch_optimizer's GSAM. The rho schedule is tested in test_rho_schedule.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flatmin.optim import GSAM, SAM, param_groups
from tests.optim.common import (MODELS, assert_params_equal, batches, closure_for, combine, convnet, grad,
                                image_batches, loss_and_grad, mlp, norm, parameters, sgd_step, train)

#: The PyTorch release's perturb_eps.
PERTURB_EPS = 1e-12


def dot(a, b):
    return sum((a[n] * b[n]).sum() for n in a)


def release_gsam(model: nn.Module, theta, x, y, rho: float, alpha: float, lr: float, adaptive: bool = False,
                 moved: set[str] | None = None):
    """One step of the PyTorch release, written out over plain SGD.

    perturb_weights: ``e = rho·g/(‖g‖ + eps)``, or adaptive ``e = rho·θ²⊙g/(‖|θ|⊙g‖ + eps)``;
    gradient_decompose: ``cos = ⟨g, g_s⟩/(‖g_s‖‖g‖ + eps)``,
    ``vertical = g − cos·‖g‖·g_s/(‖g_s‖ + eps)``, ``G = g_s − alpha·vertical``.
    ``moved`` (SAM-ON's groups, flatmin's extension): only those tensors move and the norm is theirs.
    """
    moved = set(theta) if moved is None else moved
    g = grad(model, theta, x, y)
    t = {n: theta[n].abs() if adaptive else torch.ones_like(theta[n]) for n in moved}
    scale = rho / (norm({n: t[n] * g[n] for n in moved}) + PERTURB_EPS)
    perturbed = {n: theta[n] + (t[n] ** 2 * g[n] * scale if n in moved else 0) for n in theta}
    g_s = grad(model, perturbed, x, y)
    g_norm, g_s_norm = norm(g), norm(g_s)
    cosine = dot(g, g_s) / (g_s_norm * g_norm + PERTURB_EPS)
    vertical = combine((1.0, g), (-cosine * g_norm / (g_s_norm + PERTURB_EPS), g_s))
    return sgd_step(theta, combine((1.0, g_s), (-alpha, vertical)), lr)


def big_vision_min_f(model: nn.Module, theta, x, y, rho: float, alpha: float, lr: float):
    """big_vision's gsam_gradient with minimize_fp=False, written out (over plain SGD): the
    perturbation ``rho·g/(‖g‖ + eps)``; ``ĝ = g/‖g‖`` (dual_vector, no epsilon);
    ``G = g + alpha·(g_s − ⟨ĝ, g_s⟩ĝ)``."""
    g = grad(model, theta, x, y)
    g_s = grad(model, combine((1.0, theta), (rho / (norm(g) + PERTURB_EPS), g)), x, y)
    unit = combine((1.0 / norm(g), g))
    residual = combine((1.0, g_s), (-dot(unit, g_s), unit))
    return sgd_step(theta, combine((1.0, g), (alpha, residual)), lr)


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("alpha", [0.4, 1.0])
def test_gsam_matches_pytorch_release(model_name: str, alpha: float):
    make_model, make_batches = MODELS[model_name]
    model = make_model()
    optimizer = GSAM(model.parameters(), torch.optim.SGD, rho=0.1, alpha=alpha, lr=0.1)
    for x, y in make_batches(5):
        theta = parameters(model)
        expected = release_gsam(model, theta, x, y, rho=0.1, alpha=alpha, lr=0.1)
        calls: list = []
        loss = optimizer.step(closure_for(model, optimizer, x, y, calls))
        assert len(calls) == 2
        assert torch.allclose(loss, loss_and_grad(model, theta, x, y)[0], rtol=1e-14)   # the first pass's, at θ
        assert_params_equal(model, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("model_name", list(MODELS))
def test_gsam_adaptive_matches_pytorch_release(model_name: str):
    """The release's adaptive (e = rho·θ²⊙g/‖|θ|⊙g‖, every tensor) is flatmin's ASAM convention
    with eta = 0 and every tensor adaptive."""
    make_model, make_batches = MODELS[model_name]
    model = make_model()
    groups = param_groups(model, 0.0, True, adaptive_tensors="all")
    optimizer = GSAM(groups, torch.optim.SGD, rho=2.0, alpha=0.4, adaptive=True, eta=0.0, lr=0.1)
    for x, y in make_batches(5):
        expected = release_gsam(model, parameters(model), x, y, rho=2.0, alpha=0.4, lr=0.1, adaptive=True)
        optimizer.step(closure_for(model, optimizer, x, y, []))
        assert_params_equal(model, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("model_name", list(MODELS))
def test_gsam_minimize_f_matches_big_vision(model_name: str):
    make_model, make_batches = MODELS[model_name]
    model = make_model()
    optimizer = GSAM(model.parameters(), torch.optim.SGD, rho=0.1, alpha=0.6, minimize_fp=False, lr=0.1)
    for x, y in make_batches(5):
        expected = big_vision_min_f(model, parameters(model), x, y, rho=0.1, alpha=0.6, lr=0.1)
        optimizer.step(closure_for(model, optimizer, x, y, []))
        assert_params_equal(model, expected, rtol=1e-11, atol=1e-13)    # flatmin's ĝ has ξ, big_vision's not


def test_the_two_objectives_differ():
    x, y = batches(1)[0]
    results = []
    for minimize_fp in (True, False):
        model = mlp()
        optimizer = GSAM(model.parameters(), torch.optim.SGD, rho=0.1, alpha=0.5, minimize_fp=minimize_fp, lr=0.1)
        optimizer.step(closure_for(model, optimizer, x, y, []))
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert not torch.allclose(results[0], results[1], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("adaptive", [False, True], ids=["sam", "asam"])
def test_gsam_alpha_zero_is_sam(adaptive: bool):
    """Bit for bit, over SGD with momentum and weight decay, on the conv net with BatchNorm."""
    data = image_batches(5)
    models = [convnet(), convnet()]
    optimizers = [GSAM(param_groups(models[0], 5e-4, False), torch.optim.SGD, rho=0.3, alpha=0.0, adaptive=adaptive,
                       lr=0.1, momentum=0.9),
                  SAM(param_groups(models[1], 5e-4, False), torch.optim.SGD, rho=0.3, adaptive=adaptive, lr=0.1,
                      momentum=0.9)]
    for model, optimizer in zip(models, optimizers):
        train(model, optimizer, data)
    for (key, a), b in zip(models[0].state_dict().items(), models[1].state_dict().values()):
        assert torch.equal(a, b), key


def norm_parameter_names(model: nn.Module) -> set[str]:
    return {f"{module_name}.{name}" for module_name, module in model.named_modules()
            if isinstance(module, nn.BatchNorm2d) for name, _ in module.named_parameters()}


@pytest.mark.parametrize("perturb", ["norm", "no_norm"])
def test_gsam_honours_perturb_groups(perturb: str):
    """Only the perturbed groups move and ‖g‖ of the ascent is theirs; the decomposition runs over
    every tensor (docs/optimizers.md, "The param-group option perturb")."""
    model = convnet()
    norms = norm_parameter_names(model)
    moved = norms if perturb == "norm" else set(parameters(model)) - norms
    optimizer = GSAM(param_groups(model, 0.0, True, perturb_tensors=perturb), torch.optim.SGD, rho=0.2, alpha=0.4,
                     lr=0.1)
    for x, y in image_batches(5):
        expected = release_gsam(model, parameters(model), x, y, rho=0.2, alpha=0.4, lr=0.1, moved=moved)
        optimizer.step(closure_for(model, optimizer, x, y, []))
        assert_params_equal(model, expected, rtol=1e-12, atol=1e-14)


def test_gsam_keeps_two_parameter_sized_buffers_and_no_state():
    model = mlp()
    optimizer = GSAM(model.parameters(), torch.optim.SGD, lr=0.1)
    train(model, optimizer, batches(1))
    size = sum(p.numel() for p in model.parameters())
    assert sum(t.numel() for t in optimizer._scratch.values()) == 2 * size
    assert not optimizer.state


def test_gsam_refuses_a_negative_alpha():
    with pytest.raises(ValueError, match="alpha must be a number >= 0"):
        GSAM(mlp().parameters(), torch.optim.SGD, alpha=-0.1, lr=0.1)


# -- pytorch_optimizer's GSAM ---------------------------------------------------------------------
@pytest.mark.parametrize("adaptive", [False, True], ids=["plain", "adaptive"])
def test_pytorch_optimizer_gsam_agrees_up_to_its_float32_norms(adaptive: bool):
    """pytorch_optimizer 4.1's GSAM is the PyTorch release's formula, but ‖g_s‖ in the decomposition
    and the plain ascent's ‖g‖ are summed in float32 (get_global_gradient_norm): it agrees to that
    rounding (here, after 5 steps: 5.4e-9 plain, 1.1e-9 adaptive), not to float64's."""
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
    rho, alpha, lr = 0.5 if adaptive else 0.1, 0.4, 0.1
    theirs_model, ours_model = convnet(), convnet()
    base = torch.optim.SGD(theirs_model.parameters(), lr=lr)
    constant_rho = pytorch_optimizer.ProportionScheduler(torch.optim.lr_scheduler.LambdaLR(base, lambda step: 1.0),
                                                         max_lr=lr, min_lr=lr, max_value=rho, min_value=rho)
    theirs = pytorch_optimizer.GSAM(theirs_model.parameters(), base, theirs_model, constant_rho, alpha=alpha,
                                    adaptive=adaptive)
    groups = param_groups(ours_model, 0.0, True, adaptive_tensors="all")
    ours = GSAM(groups, torch.optim.SGD, rho=rho, alpha=alpha, adaptive=adaptive, eta=0.0, lr=lr)
    for x, y in image_batches(5):
        theirs.set_closure(nn.functional.cross_entropy, x, y)
        theirs.step()
        ours.step(closure_for(ours_model, ours, x, y, []))
    difference = max((p - q).abs().max().item() for p, q in zip(theirs_model.parameters(), ours_model.parameters()))
    assert 1e-12 < difference < 1e-7
