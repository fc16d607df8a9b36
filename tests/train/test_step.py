"""The trainer's step rules: accumulation, clipping, fp16 skip-step (docs/optimizers.md, "The common contract")."""

from __future__ import annotations


import pytest
import torch
from torch import nn

from flatmin.optim import SAM, global_norm
from flatmin.runtime.precision import LossScaler
from tests.optim.common import stepper_for

CPU = torch.device("cpu")


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def batch(n: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=generator, dtype=torch.float64), torch.randint(0, 3, (n,), generator=generator)


def stepper(model, optimizer, accumulate=1, clip=None, scaler=None, loss_fn=nn.functional.cross_entropy):
    return stepper_for(model, optimizer, accumulate, scaler, loss_fn, grad_clip_norm=clip)


def test_accumulating_two_micro_batches_equals_one_batch_for_sgd():
    x, y = batch(16)
    whole, split = mlp(), mlp()
    stepper(whole, torch.optim.SGD(whole.parameters(), lr=0.1, momentum=0.9)).step(x, y)
    runner = stepper(split, torch.optim.SGD(split.parameters(), lr=0.1, momentum=0.9), accumulate=2)
    assert runner.step(x[:8], y[:8])[2] is False
    assert runner.step(x[8:], y[8:])[2] is True
    for p, q in zip(whole.parameters(), split.parameters()):
        assert torch.allclose(p, q, rtol=1e-12, atol=1e-14)


def test_sam_accumulation_perturbs_each_micro_batch_and_averages_their_gradients():
    x, y = batch(16)
    model, reference = mlp(), mlp()
    runner = stepper(model, SAM(model.parameters(), torch.optim.SGD, rho=0.2, lr=0.1), accumulate=2)
    runner.step(x[:8], y[:8])
    runner.step(x[8:], y[8:])
    assert runner.passes == 4
    # The mean of the two micro-batches' SAM gradients, each taken at its own θ + e_i.
    expected = [torch.zeros_like(p) for p in reference.parameters()]
    for xs, ys in ((x[:8], y[:8]), (x[8:], y[8:])):
        probe = mlp()
        grads = torch.autograd.grad(nn.functional.cross_entropy(probe(xs), ys), list(probe.parameters()))
        norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
        with torch.no_grad():
            for p, g in zip(probe.parameters(), grads):
                p.add_(0.2 * g / norm)
        grads = torch.autograd.grad(nn.functional.cross_entropy(probe(xs), ys), list(probe.parameters()))
        expected = [e + g / 2 for e, g in zip(expected, grads)]
    for p, r, g in zip(model.parameters(), reference.parameters(), expected):
        assert torch.allclose(p, r - 0.1 * g, rtol=1e-12, atol=1e-14)


def test_clipping_bounds_the_final_gradient():
    x, y = batch(16)
    model = mlp()
    runner = stepper(model, SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1), clip=1e-3)
    runner.step(x, y)
    # clip_grad_norm_ scales by max_norm / (norm + 1e-6)
    assert global_norm([p.grad for p in model.parameters()]).item() == pytest.approx(1e-3, rel=1e-5)


def test_fp16_overflow_in_any_pass_skips_the_step_and_backs_off_the_scale():
    x, y = batch(16)
    model = mlp()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
    calls = []

    def overflow_on_second_pass(outputs, targets):
        calls.append(1)
        loss = nn.functional.cross_entropy(outputs, targets)
        return loss * float("inf") if len(calls) == 2 else loss

    scaler = LossScaler(CPU, enabled=True)
    runner = stepper(model, optimizer, scaler=scaler, loss_fn=overflow_on_second_pass)
    runner.step(x, y)
    assert len(calls) == 2
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)                          # θ restored, base step skipped
    assert not optimizer.base_optimizer.state             # no momentum was accumulated
    assert scaler.scale.item() == 2.0 ** 15               # backed off from 2^16
    runner.step(x, y)                                     # a clean step goes through
    assert any(not torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert scaler.scale.item() == 2.0 ** 15


def test_fp16_gradients_are_unscaled_before_the_method_sees_them():
    x, y = batch(16)
    model, reference = mlp(), mlp()
    stepper(model, torch.optim.SGD(model.parameters(), lr=0.1), scaler=LossScaler(CPU, enabled=True)).step(x, y)
    stepper(reference, torch.optim.SGD(reference.parameters(), lr=0.1)).step(x, y)
    for p, q in zip(model.parameters(), reference.parameters()):
        assert torch.allclose(p, q, rtol=1e-12, atol=1e-14)


class ReplayedOutputs(nn.Module):
    """Writes each forward's logits over the previous forward's output tensor, as a replayed CUDA
    graph (``torch.compile(mode="reduce-overhead")``) reuses its output memory."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.previous: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = self.inner(x)
        if self.previous is not None:
            with torch.no_grad():
                self.previous.copy_(outputs)
        self.previous = outputs
        return outputs


def test_the_first_pass_outputs_survive_a_replay_of_the_second_pass():
    x, y = batch(8)
    model = ReplayedOutputs(mlp())
    with torch.no_grad():
        at_theta = model.inner(x)
    optimizer = SAM(model.parameters(), torch.optim.SGD, rho=0.5, lr=0.1)
    loss, outputs, _ = stepper(model, optimizer).step(x, y)
    assert model.previous is not None and not torch.equal(model.previous, at_theta)  # the replay overwrote it
    assert torch.equal(outputs, at_theta)
    assert torch.allclose(nn.functional.cross_entropy(outputs, y), loss, rtol=1e-12)
