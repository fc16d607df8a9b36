"""Lookahead over a base optimizer and over SAM, against its rule in docs/optimizers.md, in float64."""

from __future__ import annotations

import pytest
import torch

from flatmin.optim import SAM, Lookahead
from tests.optim.common import (assert_params_equal, batches, closure_for, combine, grad, mlp, norm, parameters,
                                sgd_step, stepper_for)


def sam_gradient(model, theta, x, y, rho):
    g = grad(model, theta, x, y)
    return grad(model, combine((1.0, theta), (rho / norm(g), g)), x, y)


@pytest.mark.parametrize("inner", ["sgd", "sam"])
def test_lookahead_matches_its_rule_over_five_steps(inner: str):
    k, alpha, lr, rho = 2, 0.5, 0.1, 0.05
    model = mlp()
    if inner == "sam":
        optimizer = Lookahead(SAM(model.parameters(), torch.optim.SGD, rho=rho, lr=lr), k=k, alpha=alpha)
        fast_gradient = lambda theta, x, y: sam_gradient(model, theta, x, y, rho)   # noqa: E731
    else:
        optimizer = Lookahead(torch.optim.SGD(model.parameters(), lr=lr), k=k, alpha=alpha)
        fast_gradient = lambda theta, x, y: grad(model, theta, x, y)                # noqa: E731
    slow = parameters(model)
    for step, (x, y) in enumerate(batches(5), start=1):
        theta = sgd_step(parameters(model), fast_gradient(parameters(model), x, y), lr)
        if step % k == 0:                                        # φ ← φ + alpha(θ − φ), θ ← φ
            slow = combine((1 - alpha, slow), (alpha, theta))
            theta = slow
        optimizer.step(closure_for(model, optimizer, x, y, []))
        assert_params_equal(model, theta)
    assert optimizer.base_steps == 5


def test_only_steps_whose_base_step_ran_count_towards_k():
    """With 2 micro-batches per step, 4 micro-batches are 2 base steps: one sync at k = 2."""
    model, reference = mlp(), mlp()
    optimizer = Lookahead(SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1), k=2)
    runner = stepper_for(model, optimizer, accumulate=2)
    data = batches(4)
    for x, y in data[:3]:
        runner.step(x, y)
    assert optimizer.base_steps == 1
    runner.step(*data[3])
    assert optimizer.base_steps == 2
    # The same with k = 1 and alpha = 1 is the wrapped optimizer alone.
    plain = stepper_for(reference, SAM(reference.parameters(), torch.optim.SGD, rho=0.05, lr=0.1), accumulate=2)
    twin = mlp()
    identity = stepper_for(twin, Lookahead(SAM(twin.parameters(), torch.optim.SGD, rho=0.05, lr=0.1), k=1, alpha=1.0),
                           accumulate=2)
    for x, y in data:
        plain.step(x, y)
        identity.step(x, y)
    for p, q in zip(reference.parameters(), twin.parameters()):
        assert torch.equal(p, q)


def test_batchnorm_statistics_are_not_interpolated():
    model = mlp(batchnorm=True)
    optimizer = Lookahead(torch.optim.SGD(model.parameters(), lr=0.1), k=1, alpha=0.0)   # θ ← φ every step
    runner = stepper_for(model, optimizer)
    x, y = batches(1)[0]
    before = [p.detach().clone() for p in model.parameters()]
    runner.step(x, y)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert model[1].num_batches_tracked.item() == 1
    assert not torch.equal(model[1].running_mean, torch.zeros(8))


def test_lookahead_rejects_bad_hyperparameters():
    with pytest.raises(ValueError, match="k"):
        Lookahead(torch.optim.SGD(mlp().parameters(), lr=0.1), k=0)
    with pytest.raises(ValueError, match="alpha"):
        Lookahead(torch.optim.SGD(mlp().parameters(), lr=0.1), alpha=1.5)
