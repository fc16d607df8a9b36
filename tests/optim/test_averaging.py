"""WeightAveraging (SWA/EMA) against torch's AveragedModel and timm's ModelEmaV3, in float64."""

from __future__ import annotations

import copy

import pytest
import torch
from timm.utils.model_ema import ModelEmaV3
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, get_swa_multi_avg_fn

from flatmin.optim import SAM, Lookahead, WeightAveraging
from flatmin.optim.multipass import evaluation_weights
from tests.optim.common import SGD_KWARGS, batches, convnet, image_batches, mlp, stepper_for, train


def same_tensors(xs, ys) -> bool:
    xs, ys = list(xs), list(ys)
    return len(xs) == len(ys) and all(torch.equal(x, y) for x, y in zip(xs, ys))


def snapshot(model: torch.nn.Module) -> list[torch.Tensor]:
    return [value.detach().clone() for value in model.state_dict().values()]


@pytest.mark.parametrize(("kind", "decay"), [("ema", 0.9), ("ema", 0.5), ("swa", 0.999)], ids=["ema", "ema", "swa"])
def test_weight_averaging_matches_torch_averaged_model(kind: str, decay: float):
    model = mlp()
    optimizer = WeightAveraging(torch.optim.SGD(model.parameters(), **SGD_KWARGS), kind=kind, decay=decay)
    fn = get_ema_multi_avg_fn(decay) if kind == "ema" else get_swa_multi_avg_fn()
    reference = AveragedModel(model, multi_avg_fn=fn, use_buffers=False)
    for x, y in batches(6):
        train(model, optimizer, [(x, y)])
        reference.update_parameters(model)
        with optimizer.evaluation_weights():
            assert same_tensors(model.parameters(), reference.module.parameters())
    assert optimizer.averaged == 6 and optimizer.base_steps == 6
    assert optimizer.evaluated == ("the EMA average" if kind == "ema" else "the SWA average")


def test_ema_with_buffers_matches_timm_model_ema_v3():
    model = convnet()
    optimizer = WeightAveraging(torch.optim.SGD(model.parameters(), **SGD_KWARGS), kind="ema", decay=0.8,
                                buffers=model.buffers())
    reference = ModelEmaV3(model, decay=0.8)
    runner = stepper_for(model, optimizer)
    for step, (x, y) in enumerate(image_batches(5), start=1):
        runner.step(x, y)
        reference.update(model, step=step)           # step 1: decay 0, a copy (torch's W_0^EMA = W_0^model)
        with optimizer.evaluation_weights():
            expected = reference.module.state_dict()
            for name, value in model.state_dict().items():
                assert torch.allclose(value, expected[name], rtol=1e-13, atol=1e-15), name
                assert value.dtype == expected[name].dtype, name
    assert model[1].num_batches_tracked.item() == 5


def test_weight_averaging_wraps_a_method_and_counts_its_passes():
    model, twin = mlp(), mlp()
    sam = SAM(model.parameters(), torch.optim.SGD, rho=0.05, **SGD_KWARGS)
    optimizer = WeightAveraging(sam, kind="ema", decay=0.9)
    assert optimizer.passes_per_step == 2 and optimizer.mean_passes_per_step == 2
    plain = SAM(twin.parameters(), torch.optim.SGD, rho=0.05, **SGD_KWARGS)
    data = batches(4)
    assert train(model, optimizer, data) == 8 == train(twin, plain, data)
    assert same_tensors(model.parameters(), twin.parameters())      # the training trajectory is unchanged
    assert optimizer.param_groups is sam.param_groups
    assert optimizer.gate_tensors() == []


def test_start_and_every_choose_the_averaged_steps():
    model = mlp()
    optimizer = WeightAveraging(torch.optim.SGD(model.parameters(), lr=0.1), kind="swa", start=2, every=3)
    reference = AveragedModel(model, multi_avg_fn=get_swa_multi_avg_fn(), use_buffers=False)
    for t, batch in enumerate(batches(9), start=1):
        train(model, optimizer, [batch])
        if t > 2 and (t - 2) % 3 == 0:                              # steps 5 and 8
            reference.update_parameters(model)
    assert optimizer.averaged == 2 and optimizer.base_steps == 9
    with optimizer.evaluation_weights():
        assert same_tensors(model.parameters(), reference.module.parameters())


def test_skipped_base_steps_do_not_count():
    """With 2 micro-batches per step, 4 micro-batches are 2 base steps, and only those are averaged."""
    model = mlp()
    optimizer = WeightAveraging(SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1), kind="swa")
    runner = stepper_for(model, optimizer, accumulate=2)
    reference = AveragedModel(model, multi_avg_fn=get_swa_multi_avg_fn(), use_buffers=False)
    for index, (x, y) in enumerate(batches(4)):
        runner.step(x, y)
        if index % 2 == 1:
            reference.update_parameters(model)
    assert optimizer.base_steps == 2 and optimizer.averaged == 2
    with optimizer.evaluation_weights():
        assert same_tensors(model.parameters(), reference.module.parameters())


def test_evaluation_weights_restore_bit_for_bit_even_when_the_body_raises():
    model = convnet()
    optimizer = WeightAveraging(torch.optim.SGD(model.parameters(), **SGD_KWARGS), kind="ema", decay=0.5,
                                buffers=model.buffers())
    runner = stepper_for(model, optimizer)
    for x, y in image_batches(3):
        runner.step(x, y)
    training = snapshot(model)
    with pytest.raises(RuntimeError, match="inside"):
        with evaluation_weights(optimizer):
            assert not same_tensors(model.state_dict().values(), training)
            model[1].running_mean.add_(1.0)                          # what update_bn would do
            raise RuntimeError("inside")
    assert same_tensors(model.state_dict().values(), training)


def test_identity_before_the_first_update():
    model = mlp()
    optimizer = WeightAveraging(torch.optim.SGD(model.parameters(), lr=0.1), kind="ema", start=3)
    train(model, optimizer, batches(3))
    assert optimizer.averaged == 0 and optimizer.evaluated is None
    training = snapshot(model)
    with optimizer.evaluation_weights():
        assert same_tensors(model.state_dict().values(), training)
    train(model, optimizer, batches(1, seed=5))                        # step 4: the copy, A = θ
    after_copy = snapshot(model)
    assert optimizer.averaged == 1 and optimizer.evaluated == "the EMA average"
    with optimizer.evaluation_weights():
        assert same_tensors(model.state_dict().values(), after_copy)


@pytest.mark.parametrize("kind", ["ema", "swa"])
def test_state_dict_round_trip_continues_bit_for_bit(kind: str):
    def build(model):
        inner = Lookahead(SAM(model.parameters(), torch.optim.SGD, rho=0.05, **SGD_KWARGS), k=2)
        return WeightAveraging(inner, kind=kind, decay=0.7, start=1, buffers=model.buffers())

    data = image_batches(5)
    model = convnet()
    straight = build(model)
    runner = stepper_for(model, straight)
    for x, y in data:
        runner.step(x, y)
    resumed_model = convnet()
    first = build(resumed_model)
    runner = stepper_for(resumed_model, first)
    for x, y in data[:3]:
        runner.step(x, y)
    state = copy.deepcopy(first.state_dict())
    weights = copy.deepcopy(resumed_model.state_dict())
    fresh_model = convnet(seed=3)
    fresh_model.load_state_dict(weights)
    fresh = build(fresh_model)
    fresh.load_state_dict(state)
    runner = stepper_for(fresh_model, fresh)
    for x, y in data[3:]:
        runner.step(x, y)
    assert same_tensors(fresh_model.state_dict().values(), model.state_dict().values())
    assert (fresh.base_steps, fresh.averaged) == (straight.base_steps, straight.averaged) == (5, 4)
    with straight.evaluation_weights(), fresh.evaluation_weights():
        assert same_tensors(fresh_model.state_dict().values(), model.state_dict().values())


def test_over_lookahead_it_averages_the_fast_weights():
    model, twin = mlp(), mlp()
    optimizer = WeightAveraging(Lookahead(torch.optim.SGD(model.parameters(), lr=0.1), k=2, alpha=0.5), kind="swa")
    lookahead = Lookahead(torch.optim.SGD(twin.parameters(), lr=0.1), k=2, alpha=0.5)
    reference = AveragedModel(twin, multi_avg_fn=get_swa_multi_avg_fn(), use_buffers=False)
    for batch in batches(5):
        train(model, optimizer, [batch])
        train(twin, lookahead, [batch])
        reference.update_parameters(twin)                             # θ after the step: the fast weights
    assert same_tensors(model.parameters(), twin.parameters())
    with optimizer.evaluation_weights():
        assert same_tensors(model.parameters(), reference.module.parameters())
    with lookahead.evaluation_weights():                                # its own context: the slow weights
        assert not same_tensors(twin.parameters(), reference.module.parameters())


def test_weight_averaging_rejects_bad_settings():
    params = list(mlp().parameters())
    for kwargs, word in (({"kind": "mean"}, "kind"), ({"decay": 1.5}, "decay"), ({"start": -1}, "start"),
                         ({"every": 0}, "every")):
        with pytest.raises(ValueError, match=word):
            WeightAveraging(torch.optim.SGD(params, lr=0.1), **kwargs)
