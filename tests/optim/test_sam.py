"""SAM/ASAM against their formulas in optimizers.md, in float64, and the contract's guarantees."""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from flatmin.optim import SAM, build_optimizer
from flatmin.train.precision import LossScaler
from flatmin.train.step import Stepper


def mlp(batchnorm: bool = False, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Linear(6, 8)] + ([nn.BatchNorm1d(8)] if batchnorm else []) + [nn.Tanh(), nn.Linear(8, 3)]
    return nn.Sequential(*layers).double()


def batches(count: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 6, generator=generator, dtype=torch.float64),
             torch.randint(0, 3, (16,), generator=generator)) for _ in range(count)]


def closure_for(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, calls: list):
    def closure():
        calls.append(1)
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss
    return closure


def train(model: nn.Module, optimizer: torch.optim.Optimizer, data) -> int:
    calls: list = []
    for x, y in data:
        optimizer.step(closure_for(model, optimizer, x, y, calls))
    return len(calls)


SGD_KWARGS = {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}


def test_rho_zero_gives_sgd_exactly():
    data = batches(20)
    sgd_model, sam_model = mlp(), mlp()
    train(sgd_model, torch.optim.SGD(sgd_model.parameters(), **SGD_KWARGS), data)
    calls = train(sam_model, SAM(sam_model.parameters(), torch.optim.SGD, rho=0.0, **SGD_KWARGS), data)
    assert calls == 2 * len(data)
    for p, q in zip(sgd_model.parameters(), sam_model.parameters()):
        assert torch.equal(p, q)


def test_rho_zero_gives_sgd_exactly_with_batchnorm_through_the_trainer_step():
    data = batches(20)
    models = [mlp(batchnorm=True), mlp(batchnorm=True)]
    optimizers = [torch.optim.SGD(models[0].parameters(), **SGD_KWARGS),
                  SAM(models[1].parameters(), torch.optim.SGD, rho=0.0, **SGD_KWARGS)]
    for model, optimizer in zip(models, optimizers):
        stepper = Stepper(model, optimizer, nn.functional.cross_entropy, torch.autograd.grad_mode.enable_grad,
                          LossScaler(torch.device("cpu"), enabled=False))
        for x, y in data:
            stepper.step(x, y)
    for a, b in zip(models[0].state_dict().values(), models[1].state_dict().values()):
        assert torch.equal(a, b)


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


def transcribe_asam(model: nn.Module, x, y, rho: float, eta: float, lr: float) -> dict[str, torch.Tensor]:
    """ASAM from optimizers.md, written out: T = |θ|+eta on weights, 1 on biases; plain SGD base."""
    params = dict(model.named_parameters())
    loss = nn.functional.cross_entropy(model(x), y)
    grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
    t = {n: (p.detach().abs() + eta) if "weight" in n else torch.ones_like(p) for n, p in params.items()}
    norm = torch.sqrt(sum(((t[n] * grads[n]) ** 2).sum() for n in params))
    perturbed = copy.deepcopy(model)
    with torch.no_grad():
        for n, p in perturbed.named_parameters():
            p.add_(rho * t[n] ** 2 * grads[n] / norm)
    loss = nn.functional.cross_entropy(perturbed(x), y)
    g_s = torch.autograd.grad(loss, list(perturbed.parameters()))
    return {n: p.detach() - lr * g for (n, p), g in zip(params.items(), g_s)}


@pytest.mark.parametrize("eta", [0.01, 0.0])
def test_asam_matches_its_formula_with_biases_exempt(eta: float):
    model = mlp()
    cfg = OmegaConf.create({"name": "sam", "base": "sgd", "rho": 0.5, "adaptive": True, "eta": eta, "lr": 0.1,
                            "momentum": 0.0, "nesterov": False, "weight_decay": 0.0, "decay_norm_and_bias": True})
    optimizer = build_optimizer(cfg, model)
    assert {g["adaptive"] for g in optimizer.param_groups} == {True, False}
    for x, y in batches(5):
        expected = transcribe_asam(model, x, y, rho=0.5, eta=eta, lr=0.1)
        optimizer.step(closure_for(model, optimizer, x, y, []))
        for name, p in model.named_parameters():
            assert torch.allclose(p.detach(), expected[name], rtol=1e-10, atol=1e-12), name


def test_batchnorm_statistics_come_from_the_first_pass_only():
    x, y = batches(1)[0]
    reference, model = mlp(batchnorm=True), mlp(batchnorm=True)
    reference.train()
    with torch.no_grad():
        reference(x)
    optimizer = SAM(model.parameters(), torch.optim.SGD, rho=0.5, lr=0.1)
    stepper = Stepper(model, optimizer, nn.functional.cross_entropy, torch.autograd.grad_mode.enable_grad,
                      LossScaler(torch.device("cpu"), enabled=False))
    stepper.step(x, y)
    assert stepper.passes == 2
    for name, buffer in reference.named_buffers():
        assert torch.equal(buffer, dict(model.named_buffers())[name]), name


def test_state_dict_round_trip_continues_identically():
    data = batches(6)
    model = mlp()
    optimizer = SAM(model.parameters(), torch.optim.SGD, rho=0.1, **SGD_KWARGS)
    train(model, optimizer, data[:3])
    twin = copy.deepcopy(model)
    twin_optimizer = SAM(twin.parameters(), torch.optim.SGD, rho=0.1, **SGD_KWARGS)
    twin_optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    assert twin_optimizer.param_groups is twin_optimizer.base_optimizer.param_groups
    train(model, optimizer, data[3:])
    train(twin, twin_optimizer, data[3:])
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)


def test_param_groups_are_shared_with_the_base_optimizer_instance():
    model = mlp()
    base = torch.optim.SGD(model.parameters(), lr=0.1)
    optimizer = SAM(None, base, rho=0.05)
    torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5)   # scales lr at construction
    assert base.param_groups[0]["lr"] == pytest.approx(0.05)
    assert base.param_groups[0]["rho"] == 0.05


def test_a_parameter_without_gradient_is_never_perturbed():
    model = mlp()
    frozen = nn.Parameter(torch.ones(4))
    optimizer = SAM([*model.parameters(), frozen], torch.optim.SGD, rho=0.5, lr=0.1)
    seen = []
    x, y = batches(1)[0]

    def closure():
        seen.append(frozen.detach().clone())
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    assert all(torch.equal(value, torch.ones(4)) for value in seen)
    assert torch.equal(frozen.detach(), torch.ones(4))
