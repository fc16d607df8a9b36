"""Worst-case and average sharpness against float64 restatements of the release
(tml-epfl/sharpness-vs-generalization @ 6d73be9, sharpness.py 42-55, 58-169, 172-317, 320-397; models.py
251-264), written below loop for loop; nothing left changed; degenerate cases; bad input."""

from __future__ import annotations

import copy
import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flatmin.sharpness.adversarial import apgd_checkpoints, average_sharpness, worst_case_sharpness

# ---------------------------------------------------------------------------------------------------
# The release, restated (the CUDA moves dropped, the batches given as (x, y), the global generator
# of random_init_lw replaced by a generator argument, the perturbed tensors chosen by ``named``).
# ---------------------------------------------------------------------------------------------------


def all_named(model):
    return list(model.named_parameters())


class LogitNormalizationWrapper(nn.Module):
    def __init__(self, model, normalize_logits=False):
        super().__init__()
        self.model = model
        self.normalize_logits = normalize_logits

    def forward(self, x):
        out = self.model(x)
        if self.normalize_logits:
            out = out - out.mean(dim=-1, keepdim=True)
            out_norms = out.norm(dim=-1, keepdim=True)
            out_norms = torch.max(out_norms, 10**-10 * torch.ones_like(out_norms))
            out = out / out_norms
        return out


def zero_grad(model):
    for p in model.parameters():
        if p.grad is not None:
            p.grad.zero_()


def random_init_lw(delta_dict, rho, orig_param_dict, norm='l2', adaptive=False, generator=None):
    assert norm in ['l2', 'linf'], f'Unknown perturbation model {norm}.'

    for param in delta_dict:
        if norm == 'l2':
            delta_dict[param] = torch.randn(delta_dict[param].shape, generator=generator, dtype=delta_dict[param].dtype)
        elif norm == 'linf':
            delta_dict[param] = (2 * torch.rand(delta_dict[param].shape, generator=generator,
                                                dtype=delta_dict[param].dtype) - 1)

    for param in delta_dict:
        param_norm_curr = orig_param_dict[param].abs() if adaptive else 1
        delta_dict[param] *= rho * param_norm_curr

    return delta_dict


def weight_ascent_step_momentum(model, x, y, loss_f, orig_param_dict, delta_dict, prev_delta_dict, step_size, rho,
                                momentum=0.75, adaptive=False, norm='linf', named=all_named, zero_counts_zero=False):
    delta_dict_backup = {param: delta_dict[param].clone() for param in delta_dict}

    zero_grad(model)
    output = model(x)
    obj = loss_f(output, y)
    obj.backward()

    with torch.no_grad():
        if norm == 'l2':
            grad_norm = sum([param.grad.norm()**2 for _, param in named(model)])**0.5
            for _, param in named(model):
                delta_dict[param] += (
                    step_size / (grad_norm + 1e-12) * param.grad * (
                        1 if not adaptive else orig_param_dict[param].abs()))
        elif norm == 'linf':
            for _, param in named(model):
                grad_sign_curr = param.grad.sign()
                delta_dict[param] += (step_size * grad_sign_curr * (
                    1 if not adaptive else orig_param_dict[param].abs()))
        else:
            raise ValueError('wrong norm')

    zero_grad(model)

    with torch.no_grad():
        if norm == 'l2':
            def weighted_norm(delta_dict):
                ratios = [delta_dict[param] / (orig_param_dict[param].abs() if adaptive else 1) for param in delta_dict]
                if zero_counts_zero:   # flatmin's §9 item 7: 0 / 0 counts 0
                    ratios = [torch.nan_to_num(ratio) for ratio in ratios]
                return sum([(ratio**2).sum() for ratio in ratios])**0.5

            if not adaptive:
                delta_norm = weighted_norm(delta_dict)
                if delta_norm > rho:
                    for param in delta_dict:
                        delta_dict[param] *= rho / delta_norm
            else:
                lmbd = 0.1
                max_lmbd_limit = 10.0
                min_lmbd, max_lmbd = 0.0, max_lmbd_limit
                delta_dict_tmp = {param: delta_dict[param].clone() for param in delta_dict}

                curr_norm = new_norm = weighted_norm(delta_dict_tmp)
                if curr_norm > rho:
                    while (new_norm - rho).abs() > 10**-5:
                        curr_norm = new_norm
                        for param in delta_dict:
                            c = 1/orig_param_dict[param].abs() if adaptive else 1
                            delta_dict_tmp[param] = delta_dict[param] / (1 + 2*lmbd*c**2)
                        new_norm = weighted_norm(delta_dict_tmp)
                        if new_norm > rho:
                            lmbd, min_lmbd = (lmbd + max_lmbd) / 2, lmbd
                        else:
                            lmbd, max_lmbd = (min_lmbd + lmbd) / 2, lmbd
                        if (max_lmbd_limit - max_lmbd) < 10**-2:
                            max_lmbd_limit, max_lmbd = max_lmbd_limit*2, max_lmbd*2
                delta_dict = {param: delta_dict_tmp[param].clone() for param in delta_dict_tmp}

        elif norm == 'linf':
            for param in delta_dict:
                param_curr = orig_param_dict[param].abs() if adaptive else torch.ones_like(orig_param_dict[param])
                delta_dict[param] = torch.max(
                    torch.min(delta_dict[param], param_curr * rho), -1. * param_curr * rho)
        else:
            raise ValueError('wrong norm')

        for param_name, param in named(model):
            delta_dict[param] = (
                momentum * delta_dict[param] + (1 - momentum) * prev_delta_dict[param])

        for _, param in named(model):
            param.data = orig_param_dict[param] + delta_dict[param]

        for param_name, param in named(model):
            prev_delta_dict[param] = delta_dict_backup[param]

    return delta_dict, prev_delta_dict


def get_loss_and_err(model, loss_fn, x, y):
    with torch.no_grad():
        output = model(x)
        loss = loss_fn(output, y)
        err = (output.max(1)[1] != y).float().mean()
    return loss.cpu().item(), err.cpu().item()


def eval_APGD_sharpness(model, batches, loss_f, rho=0.01, step_size_mult=1, n_iters=200, min_update_ratio=0.75,
                        adaptive=False, norm='linf', named=all_named, zero_counts_zero=False):
    """``eval_APGD_sharpness`` with ``n_restarts=1``, ``rand_init=False``, ``version='default'``; also
    returns the checkpoints and the number of halvings."""
    orig_model_state_dict = copy.deepcopy(model.state_dict())
    orig_param_dict = {param: param.clone() for _, param in named(model)}

    n_batches, delta_norm = 0, 0.
    avg_loss, avg_err, avg_init_loss, avg_init_err = 0., 0., 0., 0.
    halvings = 0

    p = [0, 0.22]
    w = [0, math.ceil(n_iters * 0.22)]
    while w[-1] < n_iters and w[-1] != w[-2]:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
        w.append(math.ceil(p[-1] * n_iters))
    w = w[1:]
    step_size_scaler = .5

    for i_batch, (x, y) in enumerate(batches):
        init_loss, init_err = get_loss_and_err(model, loss_f, x, y)
        avg_init_loss += init_loss
        avg_init_err += init_err

        worst_loss_over_restarts = init_loss
        worst_err_over_restarts = init_err
        worst_delta_norm_over_restarts = 0.

        delta_dict = {param: torch.zeros_like(param) for _, param in named(model)}
        prev_delta_dict = {param: delta_dict[param].clone() for param in delta_dict}
        worst_model_dict = copy.deepcopy(model.state_dict())

        prev_worst_loss, worst_loss = init_loss, init_loss
        worst_err = init_err
        step_size, prev_step_size = 2 * rho * step_size_mult, 2 * rho * step_size_mult
        prev_cp = 0
        num_of_updates = 0

        for i in range(n_iters):
            delta_dict, prev_delta_dict = weight_ascent_step_momentum(
                model, x, y, loss_f, orig_param_dict, delta_dict, prev_delta_dict, step_size, rho, momentum=0.75,
                adaptive=adaptive, norm=norm, named=named, zero_counts_zero=zero_counts_zero)

            with torch.no_grad():
                curr_loss, curr_err = get_loss_and_err(model, loss_f, x, y)
                delta_norm_total = torch.cat([delta_param.flatten() for delta_param in delta_dict.values()]).norm().item()

                if curr_loss > worst_loss:
                    worst_loss = curr_loss
                    worst_err = curr_err
                    worst_model_dict = copy.deepcopy(model.state_dict())
                    worst_delta_norm = delta_norm_total
                    num_of_updates += 1

                if i in w:
                    cond1 = num_of_updates < (min_update_ratio * (i - prev_cp))
                    cond2 = (prev_step_size == step_size) and (prev_worst_loss == worst_loss)
                    prev_step_size, prev_worst_loss, prev_cp = step_size, worst_loss, i
                    num_of_updates = 0

                    if cond1 or cond2:
                        halvings += 1
                        step_size *= step_size_scaler
                        model.load_state_dict(worst_model_dict)

        if worst_loss > worst_loss_over_restarts:
            worst_loss_over_restarts = worst_loss
            worst_err_over_restarts = worst_err
            worst_delta_norm_over_restarts = worst_delta_norm

        model.load_state_dict(orig_model_state_dict)

        n_batches += 1
        avg_loss += worst_loss_over_restarts
        avg_err += worst_err_over_restarts
        delta_norm = max(delta_norm, worst_delta_norm_over_restarts)

    vals = ((avg_loss - avg_init_loss) / n_batches, (avg_err - avg_init_err) / n_batches, delta_norm)
    return vals, w, halvings


def eval_average_sharpness(model, batches, loss_f, n_iters=100, rho=1., adaptive=False, norm='l2', named=all_named,
                           generator=None):
    orig_param_dict = {param_name: p.clone() for param_name, p in named(model)}
    noisy_model = copy.deepcopy(model)

    delta_dict = {param_name: torch.zeros_like(param) for param_name, param in named(model)}
    n_batches, avg_loss, avg_err, avg_init_loss, avg_init_err = 0, 0., 0., 0., 0.

    with torch.no_grad():
        for i_batch, (x, y) in enumerate(batches):
            init_loss, init_err = get_loss_and_err(model, loss_f, x, y)
            avg_init_loss += init_loss
            avg_init_err += init_err

            batch_loss, batch_err = 0., 0.

            for i in range(n_iters):
                delta_dict = random_init_lw(delta_dict, rho, orig_param_dict, norm=norm, adaptive=adaptive,
                                            generator=generator)
                for (param_name, delta), (_, param) in zip(delta_dict.items(), named(noisy_model)):
                    param.data = orig_param_dict[param_name] + delta_dict[param_name]

                curr_loss, curr_err = get_loss_and_err(noisy_model, loss_f, x, y)
                batch_loss += curr_loss
                batch_err += curr_err

            n_batches += 1
            avg_loss += (batch_loss / n_iters)
            avg_err += (batch_err / n_iters)

    return (avg_loss - avg_init_loss) / n_batches, (avg_err - avg_init_err) / n_batches


# ---------------------------------------------------------------------------------------------------
# Models and data
# ---------------------------------------------------------------------------------------------------


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden, self.head = nn.Linear(6, 10), nn.Linear(10, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.hidden(x.flatten(1))))


class ConvNet(nn.Module):
    """Two convolutions, each followed by a BatchNorm, and a linear head, for 6x6 images of 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 3, 3, bias=False), nn.BatchNorm2d(3)
        self.conv2, self.bn2 = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return self.head(F.relu(self.bn2(self.conv2(x))).flatten(1))


def build(kind: str) -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    """A float64 model in eval mode (BatchNorm affine parameters and running statistics random) and
    three batches of 7, 4 and 9 examples."""
    torch.manual_seed(0)
    model = (MLP() if kind == "mlp" else ConvNet()).double().eval()
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            with torch.no_grad():
                module.weight.copy_(0.5 + torch.rand(module.weight.shape, generator=generator))
                module.bias.copy_(0.3 * torch.randn(module.bias.shape, generator=generator))
                module.running_mean.copy_(0.3 * torch.randn(module.running_mean.shape, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=generator))
    classes = 4 if kind == "mlp" else 3
    batches = [(torch.randn(size, 1, 6, 1 if kind == "mlp" else 6, generator=generator, dtype=torch.float64),
                torch.randint(0, classes, (size,), generator=generator)) for size in (7, 4, 9)]
    return model, batches


def named_in(model, names):
    """The wrapped model's parameters named (inside the wrapper) in ``names``."""
    return [(n, p) for n, p in model.named_parameters() if n.removeprefix("model.") in names]


RHOS = {("linf", False): 0.02, ("linf", True): 0.3, ("l2", False): 2.0, ("l2", True): 0.5}   # each halves in 20 steps


def release_worst_case(model, batches, rho, norm, adaptive, steps, normalize_logits=False, names=None, **kwargs):
    wrapped = LogitNormalizationWrapper(copy.deepcopy(model), normalize_logits=normalize_logits)
    named = all_named if names is None else partial(named_in, names=names)
    return eval_APGD_sharpness(wrapped, batches, F.cross_entropy, rho=rho, n_iters=steps, adaptive=adaptive,
                               norm=norm, named=named, **kwargs)


def assert_worst_case_equal(found: dict, expected: tuple) -> None:
    sharpness, error, delta_norm = expected
    assert found["sharpness"] == pytest.approx(sharpness, rel=1e-10, abs=1e-12)
    assert found["delta_norm"] == pytest.approx(delta_norm, rel=1e-10, abs=1e-12)
    assert found["error_increase"] == pytest.approx(error, abs=1e-6)


# ---------------------------------------------------------------------------------------------------
# Worst-case sharpness
# ---------------------------------------------------------------------------------------------------


def test_the_checkpoints_are_the_releases_floats():
    assert apgd_checkpoints(20) == [5, 9, 12, 15, 16, 18, 19, 20]
    assert apgd_checkpoints(10) == [3, 5, 6, 8, 8]
    model, batches = build("mlp")
    for steps in (1, 3, 7, 10, 20, 50):
        assert apgd_checkpoints(steps) == release_worst_case(model, batches[:1], 0.01, "linf", False, steps)[1]


@pytest.mark.parametrize("normalize_logits", [False, True], ids=["logits", "normalised"])
@pytest.mark.parametrize("adaptive", [False, True], ids=["plain", "adaptive"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_worst_case_is_the_release_over_20_steps_with_halvings(kind, norm, adaptive, normalize_logits):
    model, batches = build(kind)
    rho = RHOS[norm, adaptive]
    expected, checkpoints, halvings = release_worst_case(model, batches, rho, norm, adaptive, 20, normalize_logits)
    assert halvings > 0 and checkpoints == apgd_checkpoints(20)

    found = worst_case_sharpness(model, F.cross_entropy, batches, rho, norm, adaptive, 20,
                                 normalize_logits=normalize_logits)

    assert_worst_case_equal(found, expected)
    assert found["sharpness"] > 0 and 0 < found["delta_norm"]


@pytest.mark.parametrize("steps", [1, 3, 10])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_worst_case_is_the_release_over_few_steps(norm, steps):
    model, batches = build("conv")
    expected, _, _ = release_worst_case(model, batches, RHOS[norm, True], norm, True, steps)
    found = worst_case_sharpness(model, F.cross_entropy, batches, RHOS[norm, True], norm, True, steps)
    assert_worst_case_equal(found, expected)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_worst_case_on_a_subset_of_the_parameters_with_a_larger_step(norm):
    model, batches = build("conv")
    names = {"conv2.weight", "bn1.weight", "head.bias"}
    params = [p for name, p in model.named_parameters() if name in names]
    rho = RHOS[norm, False]
    expected, _, _ = release_worst_case(model, batches, rho, norm, False, 10, names=names, step_size_mult=1.5)
    found = worst_case_sharpness(model, F.cross_entropy, batches, rho, norm, steps=10, params=params,
                                 step_size_mult=1.5)
    assert_worst_case_equal(found, expected)
    everything = worst_case_sharpness(model, F.cross_entropy, batches, rho, norm, steps=10, step_size_mult=1.5)
    assert everything["sharpness"] != found["sharpness"]


def test_a_long_step_widens_the_ellipsoid_bisection():
    model, batches = build("mlp")
    with torch.no_grad():
        model.head.weight.mul_(10.0)     # with the long step, the multiplier λ leaves its first bracket [0, 10]
    expected, _, _ = release_worst_case(model, batches, 0.5, "l2", True, 3, step_size_mult=20.0)
    found = worst_case_sharpness(model, F.cross_entropy, batches, 0.5, "l2", True, 3, step_size_mult=20.0)
    assert_worst_case_equal(found, expected)


def test_zero_weights_count_zero_in_the_ellipsoid_norm():
    model, batches = build("conv")
    with torch.no_grad():
        model.bn2.bias[1] = 0.0
        model.conv2.weight[0, 0] = 0.0
    expected, _, _ = release_worst_case(model, batches, 0.5, "l2", True, 10, zero_counts_zero=True)
    found = worst_case_sharpness(model, F.cross_entropy, batches, 0.5, "l2", True, 10)
    assert_worst_case_equal(found, expected)
    literal, _, _ = release_worst_case(model, batches, 0.5, "l2", True, 10)    # NaN norm: never projected
    assert literal[2] > found["delta_norm"]


def test_mapping_inputs_and_float_targets():
    model, batches = build("mlp")

    class Keyed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, inputs: dict) -> torch.Tensor:
            return self.inner(inputs["x"])

    keyed = [({"x": x}, y) for x, y in batches]
    assert worst_case_sharpness(Keyed(), F.cross_entropy, keyed, 0.02, steps=5) == \
        worst_case_sharpness(model, F.cross_entropy, batches, 0.02, steps=5)
    soft = [(x, F.one_hot(y, 4).double()) for x, y in batches]
    result = worst_case_sharpness(model, F.mse_loss, soft, 0.02, steps=5)
    assert result["error_increase"] is None and result["sharpness"] > 0
    assert average_sharpness(model, F.mse_loss, soft, 0.02, draws=3)["error_increase"] is None


@pytest.mark.parametrize("rho, steps", [(0.0, 20), (0, 5), (0.1, 0)])
def test_no_radius_or_no_steps_is_exactly_zero(rho, steps):
    model, batches = build("conv")
    result = worst_case_sharpness(model, F.cross_entropy, batches, rho, "l2", True, steps)
    assert result == {"sharpness": 0.0, "error_increase": 0.0, "delta_norm": 0.0}
    soft = [(x, F.one_hot(y, 3).double()) for x, y in batches]
    assert worst_case_sharpness(model, F.mse_loss, soft, rho, steps=steps)["error_increase"] is None


# ---------------------------------------------------------------------------------------------------
# Average sharpness
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("adaptive", [False, True], ids=["plain", "adaptive"])
@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_average_is_the_release_and_draws_alike(kind, norm, adaptive):
    model, batches = build(kind)
    rho = 0.05 if adaptive else 0.02
    mine, theirs = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    expected = eval_average_sharpness(LogitNormalizationWrapper(model), batches, F.cross_entropy, n_iters=7, rho=rho,
                                      adaptive=adaptive, norm=norm, generator=theirs)
    found = average_sharpness(model, F.cross_entropy, batches, rho, 7, norm, adaptive, generator=mine)
    assert found["sharpness"] == pytest.approx(expected[0], rel=1e-10, abs=1e-12)
    assert found["error_increase"] == pytest.approx(expected[1], abs=1e-6)
    assert torch.equal(mine.get_state(), theirs.get_state())


def test_average_on_a_subset_with_normalised_logits():
    model, batches = build("conv")
    names = {"conv1.weight", "bn2.bias", "head.weight"}
    params = [p for name, p in model.named_parameters() if name in names]
    mine, theirs = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    wrapped = LogitNormalizationWrapper(copy.deepcopy(model), normalize_logits=True)
    expected = eval_average_sharpness(wrapped, batches, F.cross_entropy, n_iters=5, rho=0.1, adaptive=True,
                                      named=partial(named_in, names=names),
                                      generator=theirs)
    found = average_sharpness(model, F.cross_entropy, batches, 0.1, 5, adaptive=True, params=params,
                              normalize_logits=True, generator=mine)
    assert found["sharpness"] == pytest.approx(expected[0], rel=1e-10, abs=1e-12)
    assert found["error_increase"] == pytest.approx(expected[1], abs=1e-6)
    assert torch.equal(mine.get_state(), theirs.get_state())


def test_average_with_no_radius_is_zero_but_still_draws():
    model, batches = build("mlp")
    mine, theirs = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    found = average_sharpness(model, F.cross_entropy, batches, 0.0, 3, generator=mine)
    assert abs(found["sharpness"]) < 1e-15 and abs(found["error_increase"]) < 1e-15
    eval_average_sharpness(model, batches, F.cross_entropy, n_iters=3, rho=0.0, generator=theirs)
    assert torch.equal(mine.get_state(), theirs.get_state())


# ---------------------------------------------------------------------------------------------------
# Nothing changed; bad input
# ---------------------------------------------------------------------------------------------------


def snapshot(model: nn.Module) -> tuple:
    return ({name: value.clone() for name, value in model.state_dict().items()},
            [None if p.grad is None else p.grad.clone() for p in model.parameters()],
            [module.training for module in model.modules()], torch.get_rng_state())


def assert_as_before(model: nn.Module, before: tuple) -> None:
    state, grads, modes, rng = before
    assert all(torch.equal(state[name], value) for name, value in model.state_dict().items())
    assert all((g is None and p.grad is None) or torch.equal(g, p.grad) for g, p in zip(grads, model.parameters()))
    assert [module.training for module in model.modules()] == modes
    assert torch.equal(torch.get_rng_state(), rng)


class Failing:
    """The cross-entropy, raising at its ``at``-th call (the parameters then perturbed)."""

    def __init__(self, at: int) -> None:
        self.calls, self.at = 0, at

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.at:
            raise RuntimeError("failing loss")
        return F.cross_entropy(logits, targets)


MEASURES = {"worst_case": partial(worst_case_sharpness, rho=0.1, norm="l2", adaptive=True, steps=6),
            "average": partial(average_sharpness, rho=0.1, draws=4, generator=torch.Generator().manual_seed(0))}


@pytest.mark.parametrize("measure", MEASURES)
def test_nothing_is_changed_also_when_the_measure_raises(measure):
    model, batches = build("conv")
    model.train()
    model.bn1.eval()
    grads = torch.Generator().manual_seed(6)
    for name, p in model.named_parameters():
        p.grad = None if name.startswith("bn") else torch.randn(p.shape, generator=grads, dtype=p.dtype)
    before = snapshot(model)

    MEASURES[measure](model, F.cross_entropy, batches)
    assert_as_before(model, before)
    with pytest.raises(RuntimeError, match="failing loss"):
        MEASURES[measure](model, Failing(at=4), batches)
    assert_as_before(model, before)


MODEL, BATCHES = build("mlp")


@pytest.mark.parametrize("function, arguments, message", [
    (worst_case_sharpness, {"rho": -0.1}, r"^rho must be a number >= 0 \(got -0\.1\)\.$"),
    (worst_case_sharpness, {"rho": float("nan")}, r"^rho must be a number >= 0 \(got nan\)\.$"),
    (worst_case_sharpness, {"rho": "0.1"}, r"^rho must be a number >= 0 \(got '0\.1'\)\.$"),
    (worst_case_sharpness, {"rho": 0.1, "norm": "l1"}, r"^norm must be one of linf, l2 \(got 'l1'\)\.$"),
    (worst_case_sharpness, {"rho": 0.1, "steps": -1}, r"^steps must be a non-negative integer \(got -1\)\.$"),
    (worst_case_sharpness, {"rho": 0.1, "steps": 2.0}, r"^steps must be a non-negative integer \(got 2\.0\)\.$"),
    (worst_case_sharpness, {"rho": 0.1, "step_size_mult": 0}, r"^step_size_mult must be a number > 0 \(got 0\)\.$"),
    (worst_case_sharpness, {"rho": 0.1, "adaptive": "yes"}, r"^adaptive must be true or false \(got 'yes'\)\.$"),
    (worst_case_sharpness, {"rho": 0.1, "batches": []},
     r"^batches must be a non-empty sequence of \(inputs, targets\) \(got a list of 0 items\)\.$"),
    (worst_case_sharpness, {"rho": 0.0, "params": []}, r"^params must be None or a non-empty list of the model's"),
    (worst_case_sharpness, {"rho": 0.1, "params": [torch.zeros(2, requires_grad=True)]}, r"^params must be None"),
    (average_sharpness, {"rho": -1}, r"^rho must be a number >= 0 \(got -1\)\.$"),
    (average_sharpness, {"rho": 0.1, "draws": 0}, r"^draws must be a positive integer \(got 0\)\.$"),
    (average_sharpness, {"rho": 0.1, "norm": "linf2"}, r"^norm must be one of l2, linf \(got 'linf2'\)\.$"),
    (average_sharpness, {"rho": 0.1, "normalize_logits": 1}, r"^normalize_logits must be true or false \(got 1\)\.$"),
    (average_sharpness, {"rho": 0.1, "batches": ()}, r"^batches must be a non-empty sequence"),
])
def test_bad_input_is_refused_in_one_sentence(function, arguments, message):
    arguments = {"batches": BATCHES, **arguments}
    before = snapshot(MODEL)
    with pytest.raises(ValueError, match=message):
        function(MODEL, F.cross_entropy, **arguments)
    assert_as_before(MODEL, before)
