"""A step allocates nothing parameter-sized beyond the buffers its method declares (issue 13 §3):
ASAM's scale T, TRACER's sqrt(D), F-SAM's new m, VaSSO's new d, mARWP's new F and bSAM's sqrt(N·s)
are built in the parameters' own storage, NSO's and bSAM's noise in the gradients'. Measured with
``torch.profiler``'s CPU allocation events on a closure that copies fixed gradients into ``.grad``
(no forward or backward, so the optimizer's allocations are the only ones), on a net of eight equal
layers: a whole-model temporary is eight times any one tensor."""

from __future__ import annotations

from typing import Callable

import pytest
import torch
from torch import Tensor, nn
from torch.profiler import ProfilerActivity, profile

from flatmin.optim import BSAM, GAM, GSAM, NSO, RWP, SAM, TRACER, FriendlySAM, VaSSO


def peak_allocated_bytes(run: Callable[[], object]) -> int:
    """The most bytes ``run()`` had allocated at any moment, counted from its start, from the
    profiler's allocation and free events of the CPU allocator, in order."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    events = sorted((event for event in prof.profiler.kineto_results.events() if event.name() == "[memory]"),
                    key=lambda event: event.start_ns())
    total = peak = 0
    for event in events:
        total += event.nbytes()
        peak = max(peak, total)
    return peak


def build(method: Callable[..., torch.optim.Optimizer], **options) -> tuple[torch.optim.Optimizer, Callable[[], Tensor],
                                                                             int]:
    """The method over SGD (momentum, no weight decay: torch's CPU SGD then allocates nothing) on
    eight 96×96 layers, biases in an ``adaptive=False`` group; a replaying closure; the parameter bytes."""
    torch.manual_seed(0)
    model = nn.Sequential(*(nn.Linear(96, 96) for _ in range(8)))
    weights = [layer.weight for layer in model]
    biases = [layer.bias for layer in model]
    groups = [{"params": weights}, {"params": biases, "adaptive": False}]
    if method is BSAM:                               # a whole optimizer: no base
        optimizer = method(groups, num_data=100, lr=0.01, **options)
    else:
        optimizer = method(groups, torch.optim.SGD, lr=0.01, momentum=0.9, **options)
    params = weights + biases
    gradients = [torch.randn_like(p) for p in params]

    def closure() -> Tensor:
        for param, gradient in zip(params, gradients):
            if param.grad is None:
                param.grad = torch.empty_like(param)
            param.grad.copy_(gradient)
        return torch.ones(())

    return optimizer, closure, sum(p.numel() * p.element_size() for p in params)


@pytest.mark.parametrize(("method", "options"), [
    (SAM, {}),
    (SAM, {"adaptive": True}),                       # ASAM: T in θ's storage
    (SAM, {"adaptive": True, "normalize": False}),
    (TRACER, {}),                                    # sqrt(D) and the new v in θ's storage
    (TRACER, {"lam": 0.5}),
    (NSO, {}),                                       # the noise in .grad
    (NSO, {"distribution": "uniform", "lam": 0.2, "num_perturbs": 2}),
    (FriendlySAM, {}),                               # the new m in θ's storage
    (FriendlySAM, {"adaptive": True}),
    (GAM, {}),
    (GSAM, {"adaptive": True}),
    (VaSSO, {}),                                     # the new d in θ's storage
    (RWP, {"lam": 1.0, "eta": 1.0}),                 # mARWP: the new F in θ's storage (lam 1: a plain closure)
    (BSAM, {}),                                      # ε in .grad, sqrt(N·s) in θ's storage, m's update in place
], ids=["sam", "asam", "usam-adaptive", "tracer", "tracer-lam", "nso", "nso-uniform", "fsam", "fsam-adaptive",
        "gam", "gsam-adaptive", "vasso", "marwp", "bsam"])
def test_a_step_allocates_nothing_parameter_sized(method, options):
    optimizer, closure, param_bytes = build(method, **options)
    for _ in range(2):                               # buffers, state and momentum are made here
        optimizer.step(closure)
    peak = peak_allocated_bytes(lambda: optimizer.step(closure))
    assert peak < param_bytes / 4, f"a step allocated {peak} bytes at its peak; the parameters are {param_bytes}"
