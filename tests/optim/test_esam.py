"""ESAM (Du et al., ICLR 2022; docs/optimizers.md, "ESAM") against its released code's formulas
(dydjw9/Efficient_SAM@1e06840 ``utils/Esam.py``), written out, in float64."""

from __future__ import annotations


import pytest
import torch
from torch import nn
from torch.func import functional_call

from flatmin.optim import ESAM, SAM
from tests.optim.common import (MODELS, SGD_KWARGS, assert_a_twin_continues_bit_for_bit, assert_params_equal, batches,
                                closure_for, combine, grad, mlp, norm, parameters, plain_closure_for, sgd_step)

RELEASE_EPS = 1e-7
LR = 0.1


def per_example_losses(model: nn.Module, theta, x, y):
    with torch.no_grad():
        return nn.functional.cross_entropy(functional_call(model, theta, (x,)), y, reduction="none")


class EsamTranscription:
    """The release's step: pass 1 with the masked tensors frozen, the ascent scaled by 1/beta over the
    kept tensors, the instance sharpness, the rows strictly above the int(gamma·B)-th, pass 2 on them,
    then one ``random.random()`` per tensor (here from torch's CPU generator) for the next mask."""

    def __init__(self, rho: float, beta: float, gamma: float, names) -> None:
        self.rho, self.beta, self.gamma = rho, beta, gamma
        self.kept = {name: True for name in names}          # the first step perturbs every tensor
        self.masked_ever = False

    def step(self, model, theta, x, y):
        """G and the rows of pass 2 (None: the whole batch)."""
        before = per_example_losses(model, theta, x, y)
        g = grad(model, theta, x, y)
        kept_norm = norm({name: value for name, value in g.items() if self.kept[name]})
        e = {name: value * (self.rho / (kept_norm + RELEASE_EPS)) / self.beta if self.kept[name]
             else torch.zeros_like(value) for name, value in g.items()}
        point = combine((1.0, theta), (1.0, e))
        rows = None
        if self.gamma < 0.99:
            sharpness = (per_example_losses(model, point, x, y) - before).tolist()
            cutoff = sorted(sharpness, reverse=True)[int(len(y) * self.gamma) - 1]
            rows = [index for index, value in enumerate(sharpness) if value > cutoff]
        G = grad(model, point, x, y) if rows is None else grad(model, point, x[rows], y[rows])
        if self.beta < 1:
            draws = torch.rand(len(g), dtype=torch.float64).tolist()
            self.kept = {name: u <= self.beta for name, u in zip(g, draws)}
            self.masked_ever |= not all(self.kept.values())
        return G, rows


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize(("rho", "beta", "gamma"), [(0.05, 0.6, 0.5), (0.2, 0.5, 0.75)],
                         ids=["run-sh-resnet18", "rho0.2-beta0.5-gamma0.75"])
def test_esam_matches_release(model_name: str, rho: float, beta: float, gamma: float):
    make_model, make_batches = MODELS[model_name]
    model = make_model()
    data = make_batches(5)
    transcription = EsamTranscription(rho, beta, gamma, parameters(model))
    torch.manual_seed(11)
    theta, expected = parameters(model), []
    for x, y in data:
        G, rows = transcription.step(model, theta, x, y)
        theta = sgd_step(theta, G, LR)
        expected.append((theta, rows))
    assert transcription.masked_ever                     # the mask did mask some tensor on some step

    optimizer = ESAM(model.parameters(), torch.optim.SGD, rho=rho, beta=beta, gamma=gamma, lr=LR)
    assert optimizer.passes_per_step == 3
    torch.manual_seed(11)
    for (x, y), (theta, rows) in zip(data, expected):
        calls: list = []
        optimizer.step(closure_for(model, optimizer, x, y, calls))
        assert [(c["indices"] is None, c["backward"], c["per_example"]) for c in calls[:2]] == \
            [(True, True, True), (True, False, False)]
        selected = calls[2]
        assert selected["backward"] and not selected["per_example"]
        assert selected["indices"].dtype == torch.long and selected["indices"].device.type == "cpu"
        assert selected["indices"].tolist() == rows
        assert len(rows) == int(len(y) * gamma) - 1       # no ties: one row fewer than int(gamma·B)
        assert_params_equal(model, theta, rtol=1e-12, atol=1e-14)
    masks = {name: optimizer.state[p]["mask"].item() for name, p in model.named_parameters()}
    assert masks == {name: float(kept) for name, kept in transcription.kept.items()}


def test_esam_returns_the_mean_loss_of_its_first_pass():
    model = mlp()
    optimizer = ESAM(model.parameters(), torch.optim.SGD, lr=LR)
    x, y = batches(1)[0]
    expected = nn.functional.cross_entropy(model(x), y)
    assert torch.allclose(optimizer.step(closure_for(model, optimizer, x, y, [])), expected, rtol=1e-14, atol=0)


def test_esam_without_selection_or_mask_is_sam_with_its_epsilon():
    """beta = 1, gamma = 1: every tensor, every row, e = rho·g/(‖g‖ + 1e-7): SAM with 1e-7 in place of
    SAM's 1e-12. It needs no protocol: a plain closure does, and each step takes 2 passes."""
    esam_model, sam_model = mlp(), mlp()
    esam = ESAM(esam_model.parameters(), torch.optim.SGD, rho=0.05, beta=1.0, gamma=1.0, **SGD_KWARGS)
    sam = SAM(sam_model.parameters(), torch.optim.SGD, rho=0.05, **SGD_KWARGS)
    assert esam.passes_per_step == 2
    reference = torch.optim.SGD([nn.Parameter(p.detach().clone()) for p in esam_model.parameters()], **SGD_KWARGS)
    for x, y in batches(5):
        theta = parameters(esam_model)
        g = grad(esam_model, theta, x, y)
        e = {name: 0.05 * value / (norm(g) + RELEASE_EPS) for name, value in g.items()}
        for p, value in zip(reference.param_groups[0]["params"], grad(esam_model, combine((1.0, theta), (1.0, e)),
                                                                      x, y).values()):
            p.grad = value
        reference.step()
        calls = []

        esam.step(plain_closure_for(esam_model, esam, x, y, calls))
        sam.step(closure_for(sam_model, sam, x, y, []))
        assert len(calls) == 2
        assert_params_equal(esam_model, dict(zip(theta, (p.detach() for p in reference.param_groups[0]["params"]))),
                            rtol=1e-12, atol=1e-14)
    assert not esam.state or all("mask" not in state for state in esam.state.values())   # beta = 1 draws nothing
    gaps = [(p - q).abs().max() for p, q in zip(esam_model.parameters(), sam_model.parameters())]
    assert 1e-13 < max(gaps) < 1e-6


def test_plain_closure_is_refused_with_a_type_error_naming_the_protocol():
    model = mlp()
    optimizer = ESAM(model.parameters(), torch.optim.SGD, gamma=0.5, lr=LR)
    before = parameters(model)
    calls = []

    def closure():
        calls.append(1)
        return torch.zeros(())

    message = ("ESAM needs a closure of the extended protocol, closure(indices=None, backward=True, "
               "per_example=False) with an int attribute batch_size; this one lacks indices=, backward=, "
               "per_example=, an int attribute batch_size")
    with pytest.raises(TypeError) as caught:
        optimizer.step(closure)
    assert str(caught.value) == message
    assert calls == []
    assert_params_equal(model, before, rtol=0, atol=0)


@pytest.mark.parametrize("gamma", [0.1, 0.0])
def test_a_selection_of_no_row_is_a_value_error_before_any_pass(gamma: float):
    """B = 16: int(16·0.1) = 1 keeps the rows strictly above the sharpest, none; 0 has no cutoff."""
    model = mlp()
    optimizer = ESAM(model.parameters(), torch.optim.SGD, gamma=gamma, lr=LR)
    x, y = batches(1)[0]
    calls: list = []
    with pytest.raises(ValueError, match=r"ESAM: gamma·B = .* selects no row"):
        optimizer.step(closure_for(model, optimizer, x, y, calls))
    assert calls == []


def test_with_no_row_above_the_cutoff_the_second_pass_takes_the_whole_batch():
    """rho = 0: every row's sharpness is 0, all tied; the second pass takes every row (the release
    would back-propagate an empty batch), so the step is the base optimizer's."""
    model, reference = mlp(), mlp()
    optimizer = ESAM(model.parameters(), torch.optim.SGD, rho=0.0, beta=0.6, gamma=0.5, **SGD_KWARGS)
    base = torch.optim.SGD(reference.parameters(), **SGD_KWARGS)
    for x, y in batches(3):
        calls: list = []
        optimizer.step(closure_for(model, optimizer, x, y, calls))
        assert len(calls) == 3 and calls[2]["indices"] is None and calls[2]["backward"]
        base.step(closure_for(reference, base, x, y, []))
    for p, q in zip(model.parameters(), reference.parameters()):
        assert torch.equal(p, q)


def test_the_mask_is_state_and_a_round_trip_continues_bit_for_bit():
    data = batches(6)
    model = mlp()
    optimizer = ESAM(model.parameters(), torch.optim.SGD, beta=0.5, gamma=0.5, **SGD_KWARGS)
    torch.manual_seed(3)
    for x, y in data[:3]:
        optimizer.step(closure_for(model, optimizer, x, y, []))
    state = optimizer.state_dict()["method"]["state"]
    assert sorted(state) == [0, 1, 2, 3] and all(set(value) == {"mask"} for value in state.values())
    assert {value["mask"].item() for value in state.values()} <= {0.0, 1.0}
    assert_a_twin_continues_bit_for_bit(
        model, optimizer, lambda params: ESAM(params, torch.optim.SGD, beta=0.5, gamma=0.5, **SGD_KWARGS), data[3:])
