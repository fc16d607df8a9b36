"""RWP, m-RWP and mARWP (Li et al., TMLR 2024; docs/optimizers.md, "RWP, m-RWP and mARWP") against the
released code's formulas (nblt/mARWP@d739394 ``train_marwp.py``, ``utils.py``), written out, in float64."""

from __future__ import annotations


import pytest
import torch
from torch import nn

from flatmin.optim import RWP
from tests.optim.common import (MODELS, SGD_KWARGS, assert_a_twin_continues_bit_for_bit, assert_params_equal, batches,
                                closure_for, combine, grad, mlp, parameters, plain_closure_for, sgd_step)

LR = 0.1


def filter_wise(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.reshape(-1, *([1] * (like.dim() - 1)))


class RwpTranscription:
    """train_marwp.py's step on one batch split into halves: the clean half's gradient at θ, the noise
    (torch.normal(0, std) ≙ randn·std) filter-wise, divided by sqrt(1 + eta·F) once F exists, the noisy
    half's gradient, F ← beta·F + g1², G = lam·g1 + (1 − lam)·g0. lam = 1: ARWP's single pass."""

    def __init__(self, sigma: float, lam: float, eta: float = 0.0, beta: float = 0.99) -> None:
        self.sigma, self.lam, self.eta, self.beta = sigma, lam, eta, beta
        self.fisher = None

    def noise(self, theta):
        result = {}
        for name, p in theta.items():
            if p.dim() > 1:
                std = filter_wise(self.sigma * p.reshape(p.shape[0], -1).norm(dim=1), p)
            else:
                std = self.sigma * (p.norm() + 1e-16)
            epsilon = torch.randn_like(p) * std
            if self.eta > 0 and self.fisher is not None:
                f = self.fisher[name]
                f = filter_wise(f.reshape(f.shape[0], -1).sum(dim=1), f) if f.dim() > 1 else f
                epsilon = epsilon / torch.sqrt(1 + self.eta * f)
            result[name] = epsilon
        return result

    def gradient(self, model, theta, x, y):
        half = (len(y) + 1) // 2
        if self.lam < 1:
            g0 = grad(model, theta, x[:half], y[:half])
        point = combine((1.0, theta), (1.0, self.noise(theta)))
        g1 = grad(model, point, x[half:], y[half:]) if self.lam < 1 else grad(model, point, x, y)
        if self.eta > 0:
            old = self.fisher or {name: torch.zeros_like(value) for name, value in g1.items()}
            self.fisher = {name: self.beta * old[name] + g1[name] ** 2 for name in g1}
        return g1 if self.lam == 1 else combine((self.lam, g1), (1 - self.lam, g0))


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize(("sigma", "eta", "lam"), [(0.015, 0.0, 0.5), (0.05, 0.1, 0.3)],
                         ids=["m-rwp-eta0-lam0.5", "marwp-eta0.1-lam0.3"])
def test_rwp_matches_marwp_release(model_name: str, sigma: float, eta: float, lam: float):
    make_model, make_batches = MODELS[model_name]
    model = make_model()
    data = make_batches(5)
    transcription = RwpTranscription(sigma, lam, eta)
    torch.manual_seed(13)
    theta, expected = parameters(model), []
    for x, y in data:
        theta = sgd_step(theta, transcription.gradient(model, theta, x, y), LR)
        expected.append(theta)

    optimizer = RWP(model.parameters(), torch.optim.SGD, sigma=sigma, lam=lam, eta=eta, beta=0.99, lr=LR)
    assert optimizer.passes_per_step == 2
    torch.manual_seed(13)
    for (x, y), theta in zip(data, expected):
        calls: list = []
        optimizer.step(closure_for(model, optimizer, x, y, calls))
        clean, noisy = torch.arange(len(y)).tensor_split(2)
        assert [(c["backward"], c["per_example"]) for c in calls] == [(True, False)] * 2
        assert torch.equal(calls[0]["indices"], clean) and torch.equal(calls[1]["indices"], noisy)
        assert_params_equal(model, theta, rtol=1e-12, atol=1e-14)
    state = optimizer.state_dict()["method"]["state"]
    if eta > 0:
        for index, value in enumerate(transcription.fisher.values()):
            assert torch.allclose(state[index]["F"], value, rtol=1e-12, atol=1e-16)
    else:
        assert not state                                 # m-RWP keeps no F


def test_rwp_returns_the_loss_of_the_clean_half():
    model = mlp()
    optimizer = RWP(model.parameters(), torch.optim.SGD, lr=LR)
    x, y = batches(1)[0]
    expected = nn.functional.cross_entropy(model(x[:8]), y[:8])
    assert torch.allclose(optimizer.step(closure_for(model, optimizer, x, y, [])), expected, rtol=1e-14, atol=0)


@pytest.mark.parametrize("eta", [0.0, 0.1])
def test_rwp_lam_one_is_a_single_perturbed_pass(eta: float):
    """ARWP's 1×-cost form: one pass, on the whole batch, at θ + ε; a plain closure does."""
    model = mlp()
    optimizer = RWP(model.parameters(), torch.optim.SGD, sigma=0.05, lam=1.0, eta=eta, lr=LR)
    assert optimizer.passes_per_step == 1
    transcription = RwpTranscription(0.05, 1.0, eta)
    data = batches(4)
    torch.manual_seed(17)
    theta, expected = parameters(model), []
    for x, y in data:
        theta = sgd_step(theta, transcription.gradient(model, theta, x, y), LR)
        expected.append(theta)
    torch.manual_seed(17)
    for (x, y), theta in zip(data, expected):
        calls = []

        optimizer.step(plain_closure_for(model, optimizer, x, y, calls))
        assert len(calls) == 1
        assert_params_equal(model, theta, rtol=1e-12, atol=1e-14)


def test_rwp_sigma_zero_single_pass_is_the_base_optimizer():
    model, reference = mlp(batchnorm=True), mlp(batchnorm=True)
    optimizer = RWP(model.parameters(), torch.optim.SGD, sigma=0.0, lam=1.0, eta=0.1, **SGD_KWARGS)
    base = torch.optim.SGD(reference.parameters(), **SGD_KWARGS)
    for x, y in batches(6):
        calls: list = []
        optimizer.step(closure_for(model, optimizer, x, y, calls))
        assert [c["indices"] for c in calls] == [None]
        base.step(closure_for(reference, base, x, y, []))
    for a, b in zip(model.state_dict().values(), reference.state_dict().values()):
        assert torch.equal(a, b)


def test_plain_closure_is_refused_with_a_type_error_naming_the_protocol():
    model = mlp()
    optimizer = RWP(model.parameters(), torch.optim.SGD, lam=0.5, lr=LR)
    calls = []

    def closure():
        calls.append(1)
        return torch.zeros(())

    closure.batch_size = 16                              # the keywords alone are missing
    with pytest.raises(TypeError) as caught:
        optimizer.step(closure)
    assert str(caught.value) == ("RWP needs a closure of the extended protocol, closure(indices=None, backward=True, "
                                 "per_example=False) with an int attribute batch_size; this one lacks indices=, "
                                 "backward=, per_example=")
    assert calls == []


def test_a_batch_of_one_row_cannot_be_split():
    model = mlp()
    optimizer = RWP(model.parameters(), torch.optim.SGD, lr=LR)
    x, y = batches(1)[0]
    calls: list = []
    with pytest.raises(ValueError, match="cannot be split"):
        optimizer.step(closure_for(model, optimizer, x[:1], y[:1], calls))
    assert calls == []


def test_the_fisher_is_state_and_a_round_trip_continues_bit_for_bit():
    data = batches(6)
    model = mlp()
    optimizer = RWP(model.parameters(), torch.optim.SGD, sigma=0.05, eta=0.1, **SGD_KWARGS)
    torch.manual_seed(3)
    for x, y in data[:3]:
        optimizer.step(closure_for(model, optimizer, x, y, []))
    assert all(set(value) == {"F"} for value in optimizer.state_dict()["method"]["state"].values())
    assert_a_twin_continues_bit_for_bit(
        model, optimizer, lambda params: RWP(params, torch.optim.SGD, sigma=0.05, eta=0.1, **SGD_KWARGS), data[3:])
