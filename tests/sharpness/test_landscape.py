"""Loss landscapes against a float64 restatement of tomgoldstein/loss-landscape @ 64ef4d5 (``net_plotter.py``
directions and ``set_weights``/``set_states``, ``plot_surface.py`` ``crunch``, ``scheduler.py``
``get_unplotted_indices``, ``evaluation.py`` ``eval_loss``): directions 1e-12 relative, losses 1e-12
relative, accuracies exact; nothing left changed; the bad inputs; the plots."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flatmin.sharpness.landscape import (interpolate, loss_surface, parse_grid, random_direction,
                                         target_direction)
from flatmin.sharpness.plots import plot_contours, plot_line
from tests.sharpness.nets import ConvNet

DOUBLE = torch.float64
NORMS = ["filter", "layer", "weight", "dfilter", "dlayer", None]


# --- the reference, restated in float64 (draws from ``generator`` instead of the global one; §9 item 16:
# --- the task's loss instead of the softmax-MSE branch) --------------------------------------------------

def ref_get_weights(net):
    return [p.data for p in net.parameters()]


def ref_changes(directions, step):
    """The step's change per entry, as ``set_weights`` and ``set_states`` both compute it."""
    if len(directions) == 2:
        dx = directions[0]
        dy = directions[1]
        return [d0 * step[0] + d1 * step[1] for (d0, d1) in zip(dx, dy)]
    return [d * step for d in directions[0]]


def ref_set_weights(net, weights, directions=None, step=None):
    changes = ref_changes(directions, step)
    for (p, w, d) in zip(net.parameters(), weights, changes):
        p.data = w + d.to(w.dtype)


def ref_set_states(net, states, directions=None, step=None):
    changes = ref_changes(directions, step)
    new_states = copy.deepcopy(states)
    assert len(new_states) == len(changes)
    for (k, v), d in zip(new_states.items(), changes):
        d = d.clone().detach()
        v.add_(d.to(v.dtype))          # d.type(v.type()): truncates a float change of num_batches_tracked
    net.load_state_dict(new_states)


def ref_normalize_direction(direction, weights, norm="filter"):
    if norm == "filter":
        for d, w in zip(direction, weights):
            d.mul_(w.norm() / (d.norm() + 1e-10))
    elif norm == "layer":
        direction.mul_(weights.norm() / direction.norm())
    elif norm == "weight":
        direction.mul_(weights)
    elif norm == "dfilter":
        for d in direction:
            d.div_(d.norm() + 1e-10)
    elif norm == "dlayer":
        direction.div_(direction.norm())


def ref_normalize_directions(direction, weights, norm, ignore):
    """``normalize_directions_for_weights`` and ``_for_states`` (the same loop over a list or a dict's items)."""
    assert len(direction) == len(weights)
    for d, w in zip(direction, weights):
        if d.dim() <= 1:
            if ignore == "biasbn":
                d.fill_(0)
            else:
                d.copy_(w)
        else:
            ref_normalize_direction(d, w, norm)


def ref_create_random_direction(net, generator, dir_type="weights", ignore="biasbn", norm="filter"):
    if dir_type == "weights":
        weights = ref_get_weights(net)
        direction = [torch.randn(w.size(), generator=generator, dtype=DOUBLE) for w in weights]
        ref_normalize_directions(direction, weights, norm, ignore)
    elif dir_type == "states":
        states = net.state_dict()
        direction = [torch.randn(w.size(), generator=generator, dtype=DOUBLE) for k, w in states.items()]
        ref_normalize_directions(direction, list(states.values()), norm, ignore)
    return direction


def ref_create_target_direction(net, net2, dir_type="states"):
    if dir_type == "weights":
        return [w2 - w for (w, w2) in zip(ref_get_weights(net), ref_get_weights(net2))]
    s, s2 = net.state_dict(), net2.state_dict()
    return [v2 - v for (k, v), (k2, v2) in zip(s.items(), s2.items())]


def ref_get_unplotted_indices(vals, xcoordinates, ycoordinates=None):
    inds = np.array(range(vals.size))
    inds = inds[vals.ravel() <= 0]
    if ycoordinates is not None:
        xcoord_mesh, ycoord_mesh = np.meshgrid(xcoordinates, ycoordinates)
        s1 = xcoord_mesh.ravel()[inds]
        s2 = ycoord_mesh.ravel()[inds]
        return inds, np.c_[s1, s2]
    return inds, xcoordinates.ravel()[inds]


def ref_eval_loss(net, criterion, loader):
    correct = 0
    total_loss = 0
    total = 0
    classes = all(not targets.is_floating_point() for _, targets in loader)
    net.eval()
    with torch.no_grad():
        for batch_idx, (inputs, targets) in enumerate(loader):
            batch_size = inputs.size(0)
            total += batch_size
            outputs = net(inputs)
            loss = criterion(outputs, targets)
            total_loss += loss.item() * batch_size
            if classes:
                _, predicted = torch.max(outputs.data, 1)
                correct += predicted.eq(targets).sum().item()
    return total_loss / total, (100. * correct / total if classes else None)


def ref_crunch(net, d, loader, criterion, dir_type, xcoordinates, ycoordinates=None):
    """``crunch`` on one process, on a copy of ``net``: the surface as the release stores it."""
    net = copy.deepcopy(net)
    w = ref_get_weights(net)
    s = copy.deepcopy(net.state_dict())
    shape = xcoordinates.shape if ycoordinates is None else (len(xcoordinates), len(ycoordinates))
    losses = -np.ones(shape=shape)
    accuracies = -np.ones(shape=shape)
    inds, coords = ref_get_unplotted_indices(losses, xcoordinates, ycoordinates)
    for count, ind in enumerate(inds):
        coord = coords[count]
        if dir_type == "weights":
            ref_set_weights(net, w, d, coord)
        elif dir_type == "states":
            ref_set_states(net, s, d, coord)
        loss, acc = ref_eval_loss(net, criterion, loader)
        losses.ravel()[ind] = loss
        accuracies.ravel()[ind] = np.nan if acc is None else acc
    return torch.from_numpy(losses), torch.from_numpy(accuracies)


# --- models and data ---------------------------------------------------------------------------------------

def randomised(model: nn.Module, seed: int) -> nn.Module:
    """``model`` in float64 with every floating entry drawn from ``seed`` (running variances in [0.5, 1.5])
    and ``num_batches_tracked`` set to 7."""
    generator = torch.Generator().manual_seed(seed)
    model = model.double()
    with torch.no_grad():
        for name, entry in model.state_dict(keep_vars=True).items():
            if name.endswith("running_var"):
                entry.copy_(0.5 + torch.rand(entry.shape, generator=generator, dtype=DOUBLE))
            elif entry.is_floating_point():
                entry.copy_(0.5 * torch.randn(entry.shape, generator=generator, dtype=DOUBLE))
            else:
                entry.fill_(7)
    return model


def conv_net(seed: int = 0) -> ConvNet:
    with torch.random.fork_rng(devices=[]):
        return randomised(ConvNet(F.relu, frozen_bias=True), seed)


def mlp(seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        return randomised(nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)), seed)


def batches(shape: tuple[int, ...], regression: bool = False) -> list[tuple[Tensor, Tensor]]:
    """Three batches of 5, 3 and 4 examples: class indices in [0, 3), or 3 float targets each."""
    generator = torch.Generator().manual_seed(1)
    found = []
    for size in (5, 3, 4):
        inputs = torch.randn(size, *shape, generator=generator, dtype=DOUBLE)
        targets = (torch.randn(size, 3, generator=generator, dtype=DOUBLE) if regression
                   else torch.randint(0, 3, (size,), generator=generator))
        found.append((inputs, targets))
    return found


IMAGES = batches((1, 6, 6))
VECTORS = batches((5,))
TARGETS = batches((5,), regression=True)


def assert_directions_close(found: list[Tensor], expected: list[Tensor]) -> None:
    assert len(found) == len(expected)
    for f, e in zip(found, expected):
        assert f.shape == e.shape
        torch.testing.assert_close(f, e.to(f.dtype), rtol=1e-12, atol=0)


def assert_surface(found: dict, losses: Tensor, accuracies: Tensor | None) -> None:
    torch.testing.assert_close(found["loss"], losses, rtol=1e-12, atol=0, equal_nan=True)
    if accuracies is None:
        assert found["accuracy"] is None
    else:
        assert torch.equal(found["accuracy"], accuracies)
    assert found["loss"].dtype == DOUBLE and found["loss"].device.type == "cpu"


# --- directions --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["weights", "states"])
@pytest.mark.parametrize("ignore", ["biasbn", None])
@pytest.mark.parametrize("norm", NORMS)
def test_random_directions_equal_the_reference(norm, ignore, kind):
    model = conv_net()
    ours, theirs = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)

    found = random_direction(model, ours, norm=norm, ignore=ignore, kind=kind)

    assert_directions_close(found, ref_create_random_direction(model, theirs, kind, ignore, norm))
    assert torch.equal(ours.get_state(), theirs.get_state())          # the same draws, all of them
    entries = list(model.parameters()) if kind == "weights" else list(model.state_dict().values())
    assert all(d.dtype == DOUBLE and d.shape == e.shape for d, e in zip(found, entries))


def test_without_a_generator_the_default_one_draws():
    model = mlp()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        found = random_direction(model)
        torch.manual_seed(5)
        assert_directions_close(found, ref_create_random_direction(model, None))


@pytest.mark.parametrize("kind", ["weights", "states"])
def test_a_target_direction_is_the_difference_of_the_floating_entries(kind):
    a, b = conv_net(0), conv_net(1)
    with torch.no_grad():
        b.bn1.num_batches_tracked.fill_(11)

    found = target_direction(a, b, kind=kind)

    expected = ref_create_target_direction(a, b, kind)
    for d, e in zip(found, expected, strict=True):
        assert torch.equal(d, e) if e.is_floating_point() else torch.equal(d, torch.zeros((), dtype=DOUBLE))


# --- surfaces and interpolation ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind,norm,ignore", [("weights", "filter", "biasbn"), ("weights", "layer", None),
                                              ("states", "filter", "biasbn"), ("states", None, None)])
def test_a_line_equals_the_reference(kind, norm, ignore):
    model = conv_net()
    direction = random_direction(model, torch.Generator().manual_seed(2), norm=norm, ignore=ignore, kind=kind)
    xs = parse_grid("-1:1:5")

    found = loss_surface(model, F.cross_entropy, IMAGES, [direction], xs, kind=kind)

    assert found["loss"].shape == (5,)
    assert_surface(found, *ref_crunch(model, [direction], IMAGES, F.cross_entropy, kind, xs.numpy()))


@pytest.mark.parametrize("kind", ["weights", "states"])
def test_a_square_surface_is_the_references_z_of_y_and_x(kind):
    model = conv_net()
    generator = torch.Generator().manual_seed(4)
    directions = [random_direction(model, generator, ignore=None, kind=kind) for _ in range(2)]
    xs, ys = parse_grid("-1:1:3"), parse_grid("-0.5:0.5:3")

    found = loss_surface(model, F.cross_entropy, IMAGES, directions, xs, ys, kind=kind)

    assert found["loss"].shape == (3, 3)
    assert_surface(found, *ref_crunch(model, directions, IMAGES, F.cross_entropy, kind, xs.numpy(), ys.numpy()))


def test_a_non_square_surface_has_rows_over_y():
    """The release stores the ``Z[iy, ix]`` values in a ``(len(x), len(y))`` array (§9 item 13): its
    ravelled values, reshaped to ``(len(ys), len(xs))``, are flatmin's surface."""
    model = conv_net()
    generator = torch.Generator().manual_seed(6)
    directions = [random_direction(model, generator) for _ in range(2)]
    xs, ys = parse_grid("-1:1:5"), parse_grid("0:1:3")

    found = loss_surface(model, F.cross_entropy, IMAGES, directions, xs, ys)

    losses, accuracies = ref_crunch(model, directions, IMAGES, F.cross_entropy, "weights", xs.numpy(), ys.numpy())
    assert losses.shape == (5, 3) and found["loss"].shape == (3, 5)
    assert_surface(found, losses.reshape(3, 5), accuracies.reshape(3, 5))
    single = loss_surface(model, F.cross_entropy, IMAGES, [directions[0]], [xs[3].item()])
    assert found["loss"][0, 3] == single["loss"][0]                  # y = 0 at row 0, x = 0.5 at column 3


def test_float_targets_give_the_loss_without_an_accuracy():
    model = mlp()
    direction = random_direction(model, torch.Generator().manual_seed(7), norm="layer")
    xs = parse_grid("-2:2:5")

    found = loss_surface(model, F.mse_loss, TARGETS, [direction], xs)

    assert_surface(found, ref_crunch(model, [direction], TARGETS, F.mse_loss, "weights", xs.numpy())[0], None)


@pytest.mark.parametrize("kind", ["states", "weights"])
def test_an_interpolation_equals_the_reference_nan_where_a_variance_turns_negative(kind):
    a, b = conv_net(0), conv_net(1)
    with torch.no_grad():
        b.bn2.running_var.mul_(6)             # θ_A + α(θ_B − θ_A) < 0 for α ≤ −0.5: NaN there (states only)
    alphas = parse_grid("-0.5:1.5:5")

    found = interpolate(a, b, F.cross_entropy, IMAGES, alphas, kind=kind)

    direction = ref_create_target_direction(a, b, kind)
    assert_surface(found, *ref_crunch(a, [direction], IMAGES, F.cross_entropy, kind, alphas.numpy()))
    assert found["loss"][0].isnan().item() == (kind == "states") and found["loss"][1:].isfinite().all()
    if kind == "states":                                                    # α = 1 is the other model
        at_b = loss_surface(b, F.cross_entropy, IMAGES, [direction], [0.0], kind=kind)["loss"][0]
        assert found["loss"][3].item() == pytest.approx(at_b.item(), rel=1e-12)


def test_an_infinite_loss_is_nan():
    model = mlp()
    direction = random_direction(model, torch.Generator().manual_seed(0))
    found = loss_surface(model, lambda out, y: out.sum() * 0 + float("inf"), VECTORS, [direction], [0.0, 1.0])
    assert found["loss"].isnan().all() and found["accuracy"].isfinite().all()


# --- nothing is changed --------------------------------------------------------------------------------------

def snapshot(model: nn.Module) -> tuple:
    return ({name: value.clone() for name, value in model.state_dict().items()},
            [None if p.grad is None else p.grad.clone() for p in model.parameters()],
            [module.training for module in model.modules()])


def assert_unchanged(model: nn.Module, before: tuple) -> None:
    states, grads, modes = before
    assert all(torch.equal(states[name], value) for name, value in model.state_dict().items())
    assert all(g is None and p.grad is None or torch.equal(g, p.grad) for g, p in zip(grads, model.parameters()))
    assert [module.training for module in model.modules()] == modes


def prepared(seed: int) -> nn.Module:
    """A conv net in training mode but for one BatchNorm, with a gradient on some of its parameters."""
    model = conv_net(seed).train()
    model.bn1.eval()
    model.head.weight.grad = torch.full_like(model.head.weight, 3.0)
    model.conv2.weight.grad = torch.zeros_like(model.conv2.weight)
    return model


def failing_after(calls: int):
    """Cross-entropy that raises on its ``calls + 1``-th call."""
    count = [0]

    def loss(out: Tensor, y: Tensor) -> Tensor:
        count[0] += 1
        if count[0] > calls:
            raise RuntimeError("stop")
        return F.cross_entropy(out, y)

    return loss


CALLS = {
    "random_direction": lambda a, b, d: random_direction(a, torch.Generator().manual_seed(0), kind="states"),
    "target_direction": lambda a, b, d: target_direction(a, b),
    "line": lambda a, b, d: loss_surface(a, F.cross_entropy, IMAGES, [d], [-1.0, 0.5]),
    "surface": lambda a, b, d: loss_surface(a, F.cross_entropy, IMAGES, [d, d], [-1.0, 0.5], [0.0, 2.0]),
    "interpolate": lambda a, b, d: interpolate(a, b, F.cross_entropy, IMAGES, [-0.5, 0.5, 2.0]),
    "raises midway": lambda a, b, d: loss_surface(a, failing_after(4), IMAGES, [d], [-1.0, 0.5, 1.0]),
    "raises in interpolate": lambda a, b, d: interpolate(a, b, failing_after(2), IMAGES, [-0.5, 0.5], kind="weights"),
    "bad direction": lambda a, b, d: loss_surface(a, F.cross_entropy, IMAGES, [d[:-1]], [0.0]),
}


@pytest.mark.parametrize("call", list(CALLS))
def test_a_call_changes_nothing(call):
    a, b = prepared(0), prepared(1)
    direction = [torch.ones_like(p) for p in a.parameters()]
    before_a, before_b, rng = snapshot(a), snapshot(b), torch.get_rng_state()

    try:
        CALLS[call](a, b, direction)
    except (RuntimeError, ValueError):
        assert call.startswith(("raises", "bad"))

    assert_unchanged(a, before_a)
    assert_unchanged(b, before_b)
    assert torch.equal(torch.get_rng_state(), rng)


# --- grids and bad input ------------------------------------------------------------------------------------

def test_grids_are_numpy_linspaces():
    assert torch.equal(parse_grid("-1:1:51"), torch.from_numpy(np.linspace(-1, 1, 51)))
    assert torch.equal(parse_grid("0:1:11"), torch.from_numpy(np.linspace(0.0, 1.0, 11)))     # an endpoint at 0
    assert parse_grid("-0.5:1.5:1").tolist() == [-0.5] and parse_grid("1:-1:3").tolist() == [1.0, 0.0, -1.0]
    assert parse_grid("-1:1:3").dtype == DOUBLE


@pytest.mark.parametrize("text", ["-1:1", "-1:1:0", "-1:1:2.5", "-1:1:51.0", "a:1:3", "nan:1:3", "-1:inf:3",
                                  "-1:1:3:4", "", None, 5])
def test_bad_grids_are_refused(text):
    with pytest.raises(ValueError, match=r"^text must be a grid min:max:num .* \(got .*\)\.$"):
        parse_grid(text)


MODEL = conv_net()
ONE = [torch.zeros_like(p) for p in MODEL.parameters()]
BAD = {
    "norm": (lambda: random_direction(MODEL, norm="unit"), r"^norm must be one of filter, layer, weight, dfilter, "
                                                            r"dlayer, None \(got 'unit'\)\.$"),
    "ignore": (lambda: random_direction(MODEL, ignore="bias"), r"^ignore must be one of biasbn, None \(got 'bias'\)"),
    "kind": (lambda: random_direction(MODEL, kind="buffers"), r"^kind must be one of weights, states \(got 'buffers'"),
    "target kind": (lambda: target_direction(MODEL, MODEL, kind="weight"), r"^kind must be one of weights, states"),
    "surface kind": (lambda: loss_surface(MODEL, F.cross_entropy, IMAGES, [ONE], [0.0], kind="all"),
                     r"^kind must be one of weights, states"),
    "interpolate kind": (lambda: interpolate(MODEL, MODEL, F.cross_entropy, IMAGES, [0.0], kind=None),
                         r"^kind must be one of weights, states \(got None\)"),
    "other names": (lambda: target_direction(MODEL, mlp()), r"^other.state_dict\(\) must have the names and shapes "
                                                            r"of model.state_dict\(\) \(got 0.weight of shape \(7, 5\) "
                                                            r"where model has conv1.weight of shape \(3, 1, 3, 3\)\)\.$"),
    "other shapes": (lambda: target_direction(mlp(), nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)),
                                              kind="weights"),
                     r"^other.parameters\(\) must have the names and shapes of model.parameters\(\) \(got 0.weight "
                     r"of shape \(8, 5\) where model has 0.weight of shape \(7, 5\)\)\.$"),
    "other shorter": (lambda: interpolate(mlp(), nn.Sequential(nn.Linear(5, 7)), F.cross_entropy, VECTORS, [0.0]),
                      r"^other.state_dict\(\) must have .* \(got no entry where model has 2.weight of shape \(3, 7\)\)"),
    "no direction": (lambda: loss_surface(MODEL, F.cross_entropy, IMAGES, [], [0.0]),
                     r"^directions must be a list of one or two directions, each a list of tensors \(got a list of 0 "),
    "three": (lambda: loss_surface(MODEL, F.cross_entropy, IMAGES, [ONE] * 3, [0.0], [0.0]),
              r"^directions must be a list of one or two directions.* \(got a list of 3 list\)\.$"),
    "unwrapped": (lambda: loss_surface(MODEL, F.cross_entropy, IMAGES, ONE, [0.0]),
                  r"^directions must be .* \(got a list of 10 Tensor\)\.$"),
    "ys missing": (lambda: loss_surface(MODEL, F.cross_entropy, IMAGES, [ONE, ONE], [0.0]),
                   r"^ys must be given exactly when there are two directions \(got 2 directions and no ys\)\.$"),
    "ys extra": (lambda: loss_surface(MODEL, F.cross_entropy, IMAGES, [ONE], [0.0], [0.0]),
                 r"^ys must be given exactly when there are two directions \(got 1 direction and ys\)\.$"),
    "entries": (lambda: loss_surface(MODEL, F.cross_entropy, IMAGES, [ONE], [0.0], kind="states"),
                r"^directions\[0\] must hold one tensor per entry of model.state_dict\(\), 16 \(got 10\)\.$"),
    "shape": (lambda: loss_surface(MODEL, F.cross_entropy, IMAGES, [ONE, ONE[:-1] + [torch.zeros(3, 1)]], [0.0], [0.0]),
              r"^directions\[1\] must hold a tensor of shape \(3,\) for head.bias \(got shape \(3, 1\)\)\.$"),
    "not a tensor": (lambda: loss_surface(MODEL, F.cross_entropy, IMAGES, [ONE[:-1] + [[0.0] * 3]], [0.0]),
                     r"^directions\[0\] must hold a tensor of shape \(3,\) for head.bias \(got list\)\.$"),
    "xs empty": (lambda: loss_surface(MODEL, F.cross_entropy, IMAGES, [ONE], []),
                 r"^xs must be a non-empty one-dimensional sequence of finite numbers \(got \[\]\)\.$"),
    "ys matrix": (lambda: loss_surface(MODEL, F.cross_entropy, IMAGES, [ONE, ONE], [0.0], [[0.0, 1.0]]),
                  r"^ys must be a non-empty one-dimensional sequence of finite numbers"),
    "alphas nan": (lambda: interpolate(MODEL, MODEL, F.cross_entropy, IMAGES, [0.0, float("nan")]),
                   r"^alphas must be a non-empty one-dimensional sequence of finite numbers \(got \[0.0, nan\]\)\.$"),
    "xs text": (lambda: loss_surface(MODEL, F.cross_entropy, IMAGES, [ONE], "-1:1:3"), r"^xs must be a non-empty"),
    "no batches": (lambda: loss_surface(MODEL, F.cross_entropy, [], [ONE], [0.0]),
                   r"^batches must be a non-empty sequence of \(inputs, targets\) \(got an empty one\)\.$"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_arguments_are_refused_in_one_sentence(case):
    call, message = BAD[case]
    with pytest.raises(ValueError, match=message) as raised:
        call()
    assert str(raised.value).count(". ") == 0 and str(raised.value).endswith(".")


# --- plots -----------------------------------------------------------------------------------------------------

def is_png(path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_line_plots_are_written(tmp_path):
    xs = np.linspace(-0.5, 1.5, 9)
    loss = np.array([np.nan, np.nan, 1.2, 1.0, 0.6, 0.3, 0.1, 0.05, 0.1])
    accuracy = np.array([30.0, 30.0, 40.0, 50.0, 70.0, 90.0, 100.0, 100.0, 100.0])
    assert is_png(plot_line(xs, loss, accuracy, tmp_path / "interpolation.png", "α"))
    assert is_png(plot_line(xs[:1], loss[2:3], None, tmp_path / "point.png", "x"))


def test_the_contour_plots_are_written(tmp_path):
    xs, ys = np.linspace(-1, 1, 5), np.linspace(-1, 1, 3)
    bowl = 0.01 + xs[None, :] ** 2 + 4 * ys[:, None] ** 2           # loss[iy, ix], over two decades
    assert is_png(plot_contours(xs, ys, bowl, tmp_path / "log.png"))
    assert is_png(plot_contours(xs, ys, 1 + bowl, tmp_path / "linear.png", equal_aspect=True))
    holed = bowl.copy()
    holed[0, 0] = np.nan
    assert is_png(plot_contours(xs, ys, holed, tmp_path / "nan.png"))
    assert is_png(plot_contours(xs, ys[:1], bowl[:1], tmp_path / "row.png"))            # no contours: cells
    assert is_png(plot_contours(xs, ys, np.ones_like(bowl), tmp_path / "flat.png"))
