"""Behaviour, not a formula: SAM, NSO and TRACER prefer a flat minimum to a sharp one of equal depth.

The loss is 2-D, ``f(x, y) = (x² − 1)² + ½·h(x)·y²`` with ``h(x) = 10^(1−x)``: two minima of depth 0
at ``(±1, 0)``, sharp across the valley at x = −1 (curvature 100) and flat at x = +1 (curvature 1).
Each run starts between them (x uniform in [−0.3, 0.3]) and gets a fresh "mini-batch" every step: a
random linear term ``ξ·θ``, the same for every pass of the step. Plain SGD (stable in both minima:
lr · 100 < 2) ends in either; the flat-minima methods end in the flat one more often.
"""

from __future__ import annotations

import torch
from torch import nn

from flatmin.optim import NSO, SAM, TRACER

LR, NOISE, STEPS, SEEDS = 0.015, 0.5, 150, 20


def loss(theta: torch.Tensor) -> torch.Tensor:
    x, y = theta[0], theta[1]
    return (x ** 2 - 1) ** 2 + 0.5 * 10 ** (1 - x) * y ** 2


def final_x(make_optimizer, seed: int) -> float:
    generator = torch.Generator().manual_seed(seed)
    start = torch.stack([0.6 * torch.rand((), generator=generator) - 0.3, 0.1 * torch.randn((), generator=generator)])
    theta = nn.Parameter(start)
    optimizer = make_optimizer([theta])
    torch.manual_seed(seed)
    for _ in range(STEPS):
        xi = NOISE * torch.randn(2, generator=generator)

        def closure():
            optimizer.zero_grad()
            value = loss(theta) + xi @ theta
            value.backward()
            return value

        optimizer.step(closure)
    return theta[0].item()


def ends_in_flat_minimum(make_optimizer) -> int:
    return sum(abs(final_x(make_optimizer, seed) - 1) < 0.5 for seed in range(SEEDS))


def test_sam_nso_and_tracer_end_in_the_flat_minimum_more_often_than_sgd():
    sgd = ends_in_flat_minimum(lambda params: torch.optim.SGD(params, lr=LR))
    assert 5 <= sgd <= 15                  # the start is fair: SGD ends in either minimum
    methods = {
        "sam": lambda params: SAM(params, torch.optim.SGD, rho=0.3, lr=LR),
        "nso": lambda params: NSO(params, torch.optim.SGD, sigma=0.2, lr=LR),
        "tracer": lambda params: TRACER(params, torch.optim.SGD, rho=0.3, lr=LR),
    }
    flat = {name: ends_in_flat_minimum(make) for name, make in methods.items()}
    assert all(count > sgd for count in flat.values()), (sgd, flat)
