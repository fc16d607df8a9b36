"""VaSSO (Li & Giannakis, NeurIPS 2023; docs/optimizers.md, "VaSSO") against its released code's formula
(BingcongLi/VaSSO@3524bad ``solver/vasso.py``), written out, in float64."""

from __future__ import annotations

import pytest
import torch

from flatmin.optim import SAM, VaSSO
from flatmin.runtime.precision import LossScaler
from tests.optim.common import (CPU, MODELS, SGD_KWARGS, assert_params_equal, batches, closure_for, combine,
                                grad, mlp, norm, parameters, sgd_step, stepper_for)
from tests.optim.test_contract import overflow_on_pass

RELEASE_EPS = 1e-7


class VassoTranscription:
    """The release's first_step/second_step: its moving average ``ema`` starts at the first g."""

    def __init__(self, rho: float, theta: float, eps: float = RELEASE_EPS) -> None:
        self.rho, self.theta, self.eps = rho, theta, eps
        self.d = None

    def gradient(self, model, params, x, y):
        g = grad(model, params, x, y)
        self.d = g if self.d is None else combine((1 - self.theta, self.d), (self.theta, g))
        e = {name: self.rho * value / (norm(self.d) + self.eps) for name, value in self.d.items()}
        return grad(model, combine((1.0, params), (1.0, e)), x, y)


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize(("rho", "theta"), [(0.05, 0.4), (0.2, 0.9)], ids=["api-defaults", "train-sh"])
def test_vasso_matches_release(model_name: str, rho: float, theta: float):
    make_model, make_batches = MODELS[model_name]
    model = make_model()
    optimizer = VaSSO(model.parameters(), torch.optim.SGD, rho=rho, theta=theta, lr=0.1)
    transcription = VassoTranscription(rho, theta)
    for x, y in make_batches(5):
        expected = sgd_step(parameters(model), transcription.gradient(model, parameters(model), x, y), lr=0.1)
        calls: list = []
        optimizer.step(closure_for(model, optimizer, x, y, calls))
        assert len(calls) == 2
        assert_params_equal(model, expected, rtol=1e-12, atol=1e-14)


def test_vasso_theta_one_is_sam_with_its_epsilon():
    """theta = 1 keeps no memory, d = g: SAM with 1e-7 in ‖g‖ + ε, not SAM's 1e-12."""
    vasso_model, sam_model = mlp(), mlp()
    vasso = VaSSO(vasso_model.parameters(), torch.optim.SGD, rho=0.05, theta=1.0, **SGD_KWARGS)
    sam = SAM(sam_model.parameters(), torch.optim.SGD, rho=0.05, **SGD_KWARGS)
    sam_with_its_epsilon = VassoTranscription(rho=0.05, theta=1.0)
    momentum = torch.optim.SGD([torch.nn.Parameter(p.detach().clone()) for p in vasso_model.parameters()],
                               **SGD_KWARGS)
    for x, y in batches(5):
        g = sam_with_its_epsilon.gradient(vasso_model, parameters(vasso_model), x, y)
        for p, value in zip(momentum.param_groups[0]["params"], g.values()):
            p.grad = value
        momentum.step()                                  # the same base step, written with torch's SGD
        for model, optimizer in ((vasso_model, vasso), (sam_model, sam)):
            optimizer.step(closure_for(model, optimizer, x, y, []))
        expected = dict(zip(g, (p.detach() for p in momentum.param_groups[0]["params"])))
        assert_params_equal(vasso_model, expected, rtol=1e-12, atol=1e-14)
    # SAM's epsilon is 1e-12: the trajectories agree to about 1e-7 relative, not to rounding.
    gaps = [(p - q).abs().max() for p, q in zip(vasso_model.parameters(), sam_model.parameters())]
    assert 1e-13 < max(gaps) < 1e-6


def test_vasso_keeps_its_average_in_the_state_dict():
    model = mlp()
    optimizer = VaSSO(model.parameters(), torch.optim.SGD, rho=0.05, theta=0.4, lr=0.1)
    transcription = VassoTranscription(0.05, 0.4)
    for x, y in batches(2):
        transcription.gradient(model, parameters(model), x, y)
        optimizer.step(closure_for(model, optimizer, x, y, []))
    state = optimizer.state_dict()["method"]["state"]
    for index, expected in enumerate(transcription.d.values()):
        assert torch.allclose(state[index]["d"], expected, rtol=1e-12, atol=1e-15)
        assert state[index]["count"] == 2


def test_an_overflowing_first_pass_leaves_the_average_as_if_the_step_had_not_happened():
    data = batches(3)
    models = [mlp(), mlp()]
    optimizers = [VaSSO(model.parameters(), torch.optim.SGD, theta=0.4, **SGD_KWARGS) for model in models]
    overflowing = stepper_for(models[0], optimizers[0], scaler=LossScaler(CPU, enabled=True),
                              loss_fn=overflow_on_pass(1))
    overflowing.step(*data[0])                           # its first pass overflows: nothing changes
    assert all(state["count"] == 0 and not state["d"].any() for state in optimizers[0].state.values())
    clean = stepper_for(models[1], optimizers[1], scaler=LossScaler(CPU, enabled=True))
    for x, y in data[1:]:
        overflowing.step(x, y)
        clean.step(x, y)
    for p, q in zip(*(model.parameters() for model in models)):
        assert torch.allclose(p, q, rtol=1e-14, atol=1e-16)
