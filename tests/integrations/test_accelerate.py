"""A plain Accelerate loop through ``accelerated_stepper`` leaves the parameters and BatchNorm buffers
that flatmin's ``Stepper`` leaves on the same micro-batches, bit for bit in float64 (the real
accelerate, on the CPU)."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator
from torch import nn

from flatmin.integrations.accelerate import accelerated_stepper, scaler_like
from flatmin.optim import build_optimizer
from flatmin.runtime import Runtime
from flatmin.runtime.precision import Precision
from flatmin.step import Stepper

#: Methods and settings of the spec's list: two passes, three (GAM), the extended closure (ESAM, bSAM's
#: split), a wrapper (Lookahead over SAM), and a single-pass base under the same rules.
CASES = {"sam": {}, "gam": {}, "esam": {}, "bsam": {"batch_split": 2, "weight_decay": 0.0},
         "lookahead-sam": {"lookahead": {"enabled": True, "k": 2}}, "sgd": {}}


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3)).double()


def batches(count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 6, generator=generator, dtype=torch.float64), torch.randint(0, 3, (8,), generator=generator))
            for _ in range(count)]


def optimizer(case: str, module: nn.Module) -> torch.optim.Optimizer:
    return build_optimizer(case.removeprefix("lookahead-"), module, lr=0.05, **CASES[case])


def trained(stepper: Stepper, module: nn.Module, group_sizes: list[int]) -> list[torch.Tensor]:
    data = iter(batches(sum(group_sizes)))
    for size in group_sizes:                        # the last group may be shorter, as an epoch's last
        for _ in range(size):
            torch.manual_seed(7)                    # ESAM's selection and bSAM's noise draw the same
            stepper.step(*next(data), group_size=size)
    return [tensor.detach().clone() for tensor in (*module.parameters(), *module.buffers())]


@pytest.mark.parametrize("accumulate", [1, 2])
@pytest.mark.parametrize("case", list(CASES))
def test_an_accelerate_loop_steps_exactly_as_the_stepper(case: str, accumulate: int):
    groups = [accumulate] * 3 + ([1] if accumulate > 1 else [])
    reference = model()
    expected = trained(Stepper(reference, optimizer(case, reference), Runtime.local("cpu", "fp32"),
                               accumulate=accumulate, grad_clip_norm=1.0), reference, groups)
    accelerator = Accelerator(cpu=True)
    hosted = model()
    hosted, prepared = accelerator.prepare(hosted, optimizer(case, hosted))
    stepper = accelerated_stepper(accelerator, hosted, prepared, accumulate=accumulate, grad_clip_norm=1.0)
    assert stepper.optimizer is prepared.optimizer                 # accelerate's wrapper is not stepped
    actual = trained(stepper, hosted, groups)
    assert all(torch.equal(a, b) for a, b in zip(expected, actual))


def test_a_host_grad_scalers_settings_become_flatmins_loss_scaler():
    host = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_factor=4.0, backoff_factor=0.25, growth_interval=7)
    scaler = scaler_like(host, Precision("fp16", torch.device("cpu")))
    assert scaler.enabled and scaler.scale.item() == 1024.0
    assert (scaler.growth_factor, scaler.backoff_factor, scaler.growth_interval) == (4.0, 0.25, 7)
    assert not scaler_like(None, Precision("fp32", torch.device("cpu"))).enabled
