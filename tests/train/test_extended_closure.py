"""The extended closure protocol as the trainer's Stepper builds it (docs/optimizers.md, "The extended
closure"): rows by index, forward-only and per-example losses, under the step's rules."""

from __future__ import annotations


import pytest
import torch
from torch import nn

from flatmin.optim import MultiPassOptimizer
from flatmin.runtime.precision import LossScaler
from flatmin.step import Stepper
from tests.optim.common import stepper_for

CPU = torch.device("cpu")


class Scripted(MultiPassOptimizer):
    """A method whose step makes the closure calls it is given, records what they return, and then
    takes the base step with whatever gradient the last backward call left."""

    def __init__(self, params, calls, **kwargs):
        super().__init__(params, torch.optim.SGD, lr=0.1, **kwargs)
        self.calls = calls
        self.results = []

    @torch.no_grad()
    def step(self, closure):
        self.require_extended_closure(closure)
        self.results = [self.take_pass(closure, **call) for call in self.calls]
        self.base_step()
        return self.results[0].mean()


def bn_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3)).double()


def batch(n: int = 8, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=generator, dtype=torch.float64), torch.randint(0, 3, (n,), generator=generator)


def stepper(model, optimizer, scaler=None) -> Stepper:
    return stepper_for(model, optimizer, scaler=scaler)


def grads_of_rows(model: nn.Module, x, y, rows) -> list[torch.Tensor]:
    loss = nn.functional.cross_entropy(model(x[rows]), y[rows])
    return list(torch.autograd.grad(loss, list(model.parameters())))


def test_a_call_on_some_rows_back_propagates_their_mean_loss_only():
    x, y = batch()
    rows = torch.tensor([1, 4, 5])
    model, probe = bn_model(), bn_model()
    optimizer = Scripted(model.parameters(), [{"indices": rows}])
    optimizer.base_step_gate = lambda: False          # keep θ to read the gradient
    stepper(model, optimizer).step(x, y)
    for p, expected in zip(model.parameters(), grads_of_rows(probe, x, y, rows)):
        torch.testing.assert_close(p.grad, expected, rtol=1e-12, atol=1e-14)
    assert optimizer.results[0].shape == ()


def test_per_example_losses_come_with_the_backward_of_their_mean():
    x, y = batch()
    model, probe = bn_model(), bn_model()
    optimizer = Scripted(model.parameters(), [{"per_example": True}])
    optimizer.base_step_gate = lambda: False
    stepper(model, optimizer).step(x, y)
    losses = optimizer.results[0]
    assert losses.shape == (8,) and not losses.requires_grad
    torch.testing.assert_close(losses, nn.functional.cross_entropy(probe(x), y, reduction="none").detach())
    for p, expected in zip(model.parameters(), grads_of_rows(bn_model(), x, y, torch.arange(8))):
        torch.testing.assert_close(p.grad, expected, rtol=1e-12, atol=1e-14)


def test_a_forward_only_call_returns_the_rows_losses_and_leaves_the_gradients():
    x, y = batch()
    model, probe = bn_model(), bn_model()
    optimizer = Scripted(model.parameters(), [{}, {"indices": torch.tensor([0, 2]), "backward": False}])
    optimizer.base_step_gate = lambda: False
    runner = stepper(model, optimizer)
    runner.step(x, y)
    full = grads_of_rows(probe, x, y, torch.arange(8))
    for p, expected in zip(model.parameters(), full):
        torch.testing.assert_close(p.grad, expected, rtol=1e-12, atol=1e-14)
    forward = optimizer.results[1]
    assert forward.shape == (2,) and not forward.requires_grad
    probe.train()
    torch.testing.assert_close(forward, nn.functional.cross_entropy(bn_model()(x[[0, 2]]), y[[0, 2]],
                                                                    reduction="none").detach())
    assert (runner.passes, runner.forward_only_passes) == (2, 1)


def test_batchnorm_statistics_come_from_the_first_call_whatever_rows_it_saw():
    x, y = batch()
    rows = torch.tensor([0, 3, 6, 7])
    model, reference = bn_model(), bn_model()
    optimizer = Scripted(model.parameters(), [{"indices": rows}, {}, {"backward": False}])
    stepper(model, optimizer).step(x, y)
    reference(x[rows])                                  # one train-mode forward of the first call's rows
    torch.testing.assert_close(model[1].running_mean, reference[1].running_mean)
    torch.testing.assert_close(model[1].running_var, reference[1].running_var)
    assert model[1].num_batches_tracked == 1


def test_each_row_keeps_the_outputs_of_the_first_call_that_saw_it():
    x, y = batch()
    first, second = torch.tensor([0, 1, 2]), torch.tensor([2, 3, 4, 5, 6, 7])
    model = bn_model()
    optimizer = Scripted(model.parameters(), [{"indices": first}, {"indices": second}])
    optimizer.base_step_gate = lambda: False
    _, outputs, _ = stepper(model, optimizer).step(x, y)
    assert outputs.shape == (8, 3)
    probe = bn_model()
    torch.testing.assert_close(outputs[:3], probe(x[first]).detach())
    torch.testing.assert_close(outputs[3:], bn_model()(x[second]).detach()[1:])


def test_an_fp16_overflow_in_a_call_on_some_rows_skips_the_base_step():
    x, y = batch()
    x[5] = float("inf")                               # only row 5 overflows
    model = bn_model()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = Scripted(model.parameters(), [{"indices": torch.tensor([0, 1])}, {"indices": torch.tensor([4, 5])}])
    scaler = LossScaler(CPU, enabled=True)
    stepper(model, optimizer, scaler).step(x, y)
    assert scaler.scale.item() == 2.0 ** 15               # the overflow backed the scale off from 2^16
    for p, q in zip(model.parameters(), before):
        assert torch.equal(p, q)                          # and skipped the base step
    assert not optimizer.base_optimizer.state


def plain_closure():
    return torch.zeros(())


def keywords_closure(**kwargs):
    return torch.zeros(())


def test_plain_closure_is_refused_with_a_type_error_naming_the_protocol():
    optimizer = Scripted([nn.Parameter(torch.zeros(2))], [{}])
    with pytest.raises(TypeError) as refused:
        optimizer.step(plain_closure)
    assert str(refused.value) == (
        "Scripted needs a closure of the extended protocol, closure(indices=None, backward=True, per_example=False) "
        "with an int attribute batch_size; this one lacks indices=, backward=, per_example=, an int attribute "
        "batch_size")
    keywords_closure.batch_size = 4                   # a **kwargs closure with batch_size has the protocol
    assert optimizer.require_extended_closure(keywords_closure) == 4


def test_an_fp16_overflow_in_a_forward_only_call_skips_the_base_step_too():
    x, y = batch()
    calls = []

    def overflow_in_the_forward_only_call(outputs, targets, reduction="mean"):
        calls.append(reduction)
        loss = nn.functional.cross_entropy(outputs, targets, reduction=reduction)
        return loss * float("inf") if reduction == "none" else loss

    model = bn_model()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = Scripted(model.parameters(), [{}, {"backward": False}, {}])
    scaler = LossScaler(CPU, enabled=True)
    stepper_for(model, optimizer, scaler=scaler, loss_fn=overflow_in_the_forward_only_call).step(x, y)
    assert calls == ["mean", "none", "mean"]
    assert scaler.scale.item() == 2.0 ** 15
    for p, q in zip(model.parameters(), before):
        assert torch.equal(p, q)
