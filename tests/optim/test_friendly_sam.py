"""F-SAM, Friendly SAM (Li et al., CVPR 2024; docs/optimizers.md, "Friendly-SAM") against the official code's
formula (nblt/F-SAM@2e2f989 ``utils.py``, ``FriendlySAM``), written out, in float64; and against
pytorch_optimizer's ``FriendlySAM``."""

from __future__ import annotations

import pytest
import pytorch_optimizer
import torch

from flatmin.optim import SAM, FriendlySAM, param_groups
from flatmin.runtime.precision import LossScaler
from tests.optim.common import (CPU, MODELS, SGD_KWARGS, assert_params_equal, batches, closure_for, combine,
                                grad, mlp, norm, parameters, sgd_step, stepper_for)
from tests.optim.test_contract import overflow_on_pass

RELEASE_EPS = 1e-12


class FriendlySamTranscription:
    """The release's first_step: the first g starts the moving average ``momentum`` and is the
    direction; later, the direction is g − sigma·m with the previous m, then m is updated.
    ``adaptive``: the release's ASAM, T = |θ| on every tensor."""

    def __init__(self, rho: float, sigma: float, lmbda: float, adaptive: bool = False) -> None:
        self.rho, self.sigma, self.lmbda, self.adaptive = rho, sigma, lmbda, adaptive
        self.m = None

    def gradient(self, model, params, x, y):
        g = grad(model, params, x, y)
        if self.m is None:
            self.m, d = g, g
        else:
            d = combine((1.0, g), (-self.sigma, self.m))
            self.m = combine((self.lmbda, self.m), (1 - self.lmbda, g))
        t = {name: value.abs() if self.adaptive else torch.ones_like(value) for name, value in params.items()}
        scale = self.rho / (norm({name: t[name] * d[name] for name in d}) + RELEASE_EPS)
        e = {name: t[name] ** 2 * d[name] * scale for name in d}
        return grad(model, combine((1.0, params), (1.0, e)), x, y)


SETTINGS = {"run-sh": (0.2, 1.0, 0.6, False), "sigma-half": (0.1, 0.5, 0.9, False),
            "adaptive": (0.5, 1.0, 0.95, True)}


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_friendly_sam_matches_nblt_release(model_name: str, setting: str):
    rho, sigma, lmbda, adaptive = SETTINGS[setting]
    make_model, make_batches = MODELS[model_name]
    model = make_model()
    groups = param_groups(model, 0.0, True, adaptive_tensors="all")
    optimizer = FriendlySAM(groups, torch.optim.SGD, rho=rho, sigma=sigma, lmbda=lmbda, adaptive=adaptive,
                            eta=0.0, lr=0.1)
    transcription = FriendlySamTranscription(rho, sigma, lmbda, adaptive)
    for x, y in make_batches(5):
        expected = sgd_step(parameters(model), transcription.gradient(model, parameters(model), x, y), lr=0.1)
        calls: list = []
        optimizer.step(closure_for(model, optimizer, x, y, calls))
        assert len(calls) == 2
        assert_params_equal(model, expected, rtol=1e-12, atol=1e-14)
    m = {name: p for name, p in model.named_parameters()}
    for name, expected in transcription.m.items():
        assert torch.allclose(optimizer.state[m[name]]["m"], expected, rtol=1e-12, atol=1e-15), name


@pytest.mark.parametrize("adaptive", [False, True], ids=["sam", "asam"])
def test_friendly_sam_sigma_zero_is_sam(adaptive: bool):
    models = [mlp(), mlp()]
    friendly = FriendlySAM(models[0].parameters(), torch.optim.SGD, rho=0.1, sigma=0.0, lmbda=0.6,
                           adaptive=adaptive, **SGD_KWARGS)
    sam = SAM(models[1].parameters(), torch.optim.SGD, rho=0.1, adaptive=adaptive, **SGD_KWARGS)
    for x, y in batches(5):
        for model, optimizer in zip(models, (friendly, sam)):
            optimizer.step(closure_for(model, optimizer, x, y, []))
    for p, q in zip(*(model.parameters() for model in models)):
        assert torch.equal(p, q)


@pytest.mark.parametrize("model_name", list(MODELS))
def test_friendly_sam_agrees_with_pytorch_optimizer_to_its_float32_norm(model_name: str):
    """pytorch_optimizer 4.1.0's FriendlySAM computes the same formula, but sums the squared norms in
    float32 (``get_global_gradient_norm``) and updates m with ``lerp`` on the CPU: after 5 steps it
    is about 1e-9 away, far above float64 rounding (flatmin vs the release's formula: 1e-15)."""
    make_model, make_batches = MODELS[model_name]
    ours, theirs = make_model(), make_model()
    optimizer = FriendlySAM(ours.parameters(), torch.optim.SGD, rho=0.2, sigma=1.0, lmbda=0.6, **SGD_KWARGS)
    reference = pytorch_optimizer.FriendlySAM(theirs.parameters(), torch.optim.SGD, rho=0.2, sigma=1.0, lmbda=0.6,
                                              **SGD_KWARGS)
    for x, y in make_batches(5):
        optimizer.step(closure_for(ours, optimizer, x, y, []))
        closure = closure_for(theirs, reference, x, y, [])
        closure()                                        # its step expects the gradient at θ in .grad
        reference.step(closure)
    gap = max((p - q).abs().max().item() for p, q in zip(ours.parameters(), theirs.parameters()))
    assert 1e-13 < gap < 1e-8, gap


def test_an_overflowing_first_pass_leaves_the_average_as_if_the_step_had_not_happened():
    data = batches(3)
    models = [mlp(), mlp()]
    optimizers = [FriendlySAM(model.parameters(), torch.optim.SGD, rho=0.2, sigma=0.5, **SGD_KWARGS)
                  for model in models]
    overflowing = stepper_for(models[0], optimizers[0], scaler=LossScaler(CPU, enabled=True),
                              loss_fn=overflow_on_pass(1))
    overflowing.step(*data[0])                           # its first pass overflows: nothing changes
    assert all(state["count"] == 0 and not state["m"].any() for state in optimizers[0].state.values())
    clean = stepper_for(models[1], optimizers[1], scaler=LossScaler(CPU, enabled=True))
    for x, y in data[1:]:
        overflowing.step(x, y)
        clean.step(x, y)
    for p, q in zip(*(model.parameters() for model in models)):
        assert torch.allclose(p, q, rtol=1e-14, atol=1e-16)
