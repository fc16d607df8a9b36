"""Loss landscapes (Li et al., "Visualizing the loss landscape of neural nets", NeurIPS 2018): random
filter-normalised directions, the loss and accuracy along one or over two of them, and the
interpolation between two models, equal to tomgoldstein/loss-landscape @ 64ef4d5:

- directions: ``net_plotter.py`` ``normalize_direction`` (98-129), ``normalize_directions_for_weights``
  / ``_for_states`` (132-156), ``create_target_direction`` (168-193), ``create_random_direction``
  (196-222);
- surfaces: ``plot_surface.py`` ``crunch`` (73-154) with ``set_weights`` / ``set_states``
  (``net_plotter.py`` 21-65), the grid order of ``scheduler.py`` ``get_unplotted_indices`` (6-34) and
  ``evaluation.py`` ``eval_loss`` (12-66), the grids of ``plot_surface.py`` (62-66, 231-239).

Where the reference is ambiguous or wrong, flatmin does this:

12. ``ignore=None`` gives 1-D entries (biases, BatchNorm parameters and statistics) a direction equal
    to the entry itself, as the release does (a step x scales them by 1 + x); the defaults are the
    papers' ``filter`` / ``biasbn``, not the release's command-line defaults (no normalisation, no
    ignoring).
13. A 2-D surface has shape ``(len(ys), len(xs))`` and holds ``Z[iy, ix]``, for non-square grids too
    (the release stores a reshape of that layout in a ``(len(x), len(y))`` array).
14. :func:`parse_grid` reads ``num`` as an integer and accepts an endpoint at 0.
15. ``kind="states"`` draws a direction for ``num_batches_tracked`` too (so the other draws match),
    but integer entries never move; a loss that is not finite (a running variance extrapolated below
    zero) is returned as NaN.
16. The loss is the caller's ``loss_fn`` (the task's loss), not ``eval_loss``'s softmax-MSE on a
    10-class one-hot.

Every function that takes a model runs inside :func:`left_as_found`: eval mode, and the state, the
``.grad`` and the modes as they were afterwards, also on an exception.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from flatmin.sharpness.arguments import class_indices
from flatmin.sharpness.hessian import LossFn, to_device
from flatmin.sharpness.untouched import left_as_found

KINDS = ("weights", "states")
NORMS = ("filter", "layer", "weight", "dfilter", "dlayer", None)
IGNORES = ("biasbn", None)
#: What a direction of each kind has one tensor for.
ENTRIES = {"weights": "parameters()", "states": "state_dict()"}


def random_direction(model: nn.Module, generator: torch.Generator | None = None, norm: str | None = "filter",
                     ignore: str | None = "biasbn", kind: str = "weights") -> list[Tensor]:
    """A Gaussian direction, one tensor per entry of ``kind``, all drawn before any is normalised
    (integer entries draw in the model's floating dtype); 1-D entries get zeros (``biasbn``) or a copy
    of themselves (None), the others are rescaled by ``norm``."""
    _check_choice("norm", norm, NORMS)
    _check_choice("ignore", ignore, IGNORES)
    _check_choice("kind", kind, KINDS)
    with left_as_found(model):
        entries = [entry.detach() for _, entry in _entries(model, kind)]
        floating = _floating_dtype(entries)
        drawn = [torch.randn(entry.shape, generator=generator, device=entry.device,
                             dtype=entry.dtype if entry.is_floating_point() else floating) for entry in entries]
        return [_normalised(d, entry.to(d.dtype), norm, ignore) for d, entry in zip(drawn, entries)]


def target_direction(model: nn.Module, other: nn.Module, kind: str = "states") -> list[Tensor]:
    """``other − model`` per entry of ``kind`` (zeros for integer entries), in ``model``'s dtypes and on
    its devices; ``other`` must have the same entries (names and shapes)."""
    _check_choice("kind", kind, KINDS)
    with left_as_found(model):
        mine, theirs = _entries(model, kind), _entries(other, kind)
        _check_same_entries(mine, theirs, kind)
        floating = _floating_dtype([entry for _, entry in mine])
        return [b.detach().to(a.device, a.dtype) - a.detach() if a.is_floating_point()
                else torch.zeros(a.shape, dtype=floating, device=a.device) for (_, a), (_, b) in zip(mine, theirs)]


def loss_surface(model: nn.Module, loss_fn: LossFn, batches: Sequence[tuple[Any, Tensor]],
                 directions: Sequence[Sequence[Tensor]], xs: Any, ys: Any = None, kind: str = "weights") -> dict:
    """The loss (and accuracy) at ``θ₀ + x·d₁`` for each x of ``xs`` (one direction), or at
    ``θ₀ + x·d₁ + y·d₂`` for each (x, y) (two directions, ``ys`` given): float64 CPU tensors of shape
    ``(len(xs),)`` or ``(len(ys), len(xs))``, ``[iy, ix]``. Floating entries of ``kind`` move, integer
    entries never. Each point is the size-weighted mean of ``loss_fn`` over ``batches`` (NaN where not
    finite), and the accuracy ``100 · correct / total`` when every batch's targets are class indices
    (else ``accuracy`` is None)."""
    _check_choice("kind", kind, KINDS)
    xs = _coordinates("xs", xs)
    ys = None if ys is None else _coordinates("ys", ys)
    if len(batches) == 0:
        raise ValueError("batches must be a non-empty sequence of (inputs, targets) (got an empty one).")
    with left_as_found(model):
        named = _entries(model, kind)
        _check_directions(directions, named, kind, ys)
        moving = [index for index, (_, entry) in enumerate(named) if entry.is_floating_point()]
        moved = [named[index][1] for index in moving]
        origin = [entry.detach().clone() for entry in moved]
        along = [[direction[index].to(entry.device, entry.dtype) for index, entry in zip(moving, moved)]
                 for direction in directions]
        device = next(model.parameters()).device
        on_device = [(to_device(inputs, device), labels.to(device)) for inputs, labels in batches]
        classes = all(class_indices(labels) for _, labels in on_device)
        points = [(x,) for x in xs.tolist()] if ys is None else [(x, y) for y in ys.tolist() for x in xs.tolist()]
        losses, accuracies = [], []
        with torch.no_grad():
            for point in points:
                for entry, start, *ds in zip(moved, origin, *along):
                    change = ds[0] * point[0] if len(ds) == 1 else ds[0] * point[0] + ds[1] * point[1]
                    entry.copy_(start + change)
                loss, accuracy = _evaluate(model, loss_fn, on_device, classes)
                losses.append(loss)
                accuracies.append(accuracy)
    shape = (len(xs),) if ys is None else (len(ys), len(xs))
    return {"loss": torch.tensor(losses, dtype=torch.float64).reshape(shape),
            "accuracy": None if accuracies[0] is None else torch.tensor(accuracies, dtype=torch.float64).reshape(shape)}


def interpolate(model: nn.Module, other: nn.Module, loss_fn: LossFn, batches: Sequence[tuple[Any, Tensor]],
                alphas: Any, kind: str = "states") -> dict:
    """The loss (and accuracy) at ``θ_A + α(θ_B − θ_A)`` for each α of ``alphas``, A being ``model`` and B
    ``other``: :func:`loss_surface` along :func:`target_direction`."""
    alphas = _coordinates("alphas", alphas)
    return loss_surface(model, loss_fn, batches, [target_direction(model, other, kind)], alphas, kind=kind)


def parse_grid(text: str) -> Tensor:
    """``"min:max:num"`` → ``np.linspace(min, max, num)`` as a float64 tensor (``num`` an integer ≥ 1)."""
    parts = text.split(":") if isinstance(text, str) else []
    try:
        low, high, num = float(parts[0]), float(parts[1]), int(parts[2])
        valid = len(parts) == 3 and math.isfinite(low) and math.isfinite(high) and num >= 1
    except (IndexError, ValueError):
        valid = False
    if not valid:
        raise ValueError(f"text must be a grid min:max:num of finite numbers min and max and an integer "
                         f"num >= 1, e.g. -1:1:51 (got {text!r}).")
    return torch.tensor(np.linspace(low, high, num), dtype=torch.float64)


def _entries(model: nn.Module, kind: str) -> list[tuple[str, Tensor]]:
    """The named tensors a direction of ``kind`` has one tensor for, in order."""
    return list(model.named_parameters()) if kind == "weights" else list(model.state_dict(keep_vars=True).items())


def _floating_dtype(entries: Sequence[Tensor]) -> torch.dtype:
    """The dtype of the first floating entry (integer entries draw and differ in it)."""
    return next((entry.dtype for entry in entries if entry.is_floating_point()), torch.get_default_dtype())


def _normalised(d: Tensor, entry: Tensor, norm: str | None, ignore: str | None) -> Tensor:
    """``d`` rescaled by ``norm`` after ``entry`` (``normalize_direction``); 1-D entries: zeros or the entry."""
    if entry.dim() <= 1:
        return torch.zeros_like(d) if ignore == "biasbn" else entry.clone()
    if norm == "filter":
        return d * _per_filter(torch.linalg.vector_norm(entry.flatten(1), dim=1)
                               / (torch.linalg.vector_norm(d.flatten(1), dim=1) + 1e-10), d)
    if norm == "layer":
        return d * (entry.norm() / d.norm())
    if norm == "weight":
        return d * entry
    if norm == "dfilter":
        return d / _per_filter(torch.linalg.vector_norm(d.flatten(1), dim=1) + 1e-10, d)
    if norm == "dlayer":
        return d / d.norm()
    return d


def _per_filter(scales: Tensor, like: Tensor) -> Tensor:
    """One value per slice along dim 0, shaped to broadcast over ``like``."""
    return scales.reshape(-1, *[1] * (like.dim() - 1))


def _evaluate(model: nn.Module, loss_fn: LossFn, batches: Sequence[tuple[Any, Tensor]],
              classes: bool) -> tuple[float, float | None]:
    """``eval_loss``: the size-weighted mean loss (NaN if not finite) and, when the targets are class
    indices, the accuracy in percent."""
    total, summed, correct = 0, 0.0, 0
    for inputs, labels in batches:
        outputs = model(inputs)
        total += len(labels)
        summed += loss_fn(outputs, labels).item() * len(labels)
        if classes:
            correct += outputs.argmax(1).eq(labels).sum().item()
    loss = summed / total
    return (loss if math.isfinite(loss) else math.nan), (100.0 * correct / total if classes else None)



def _check_choice(name: str, value: Any, choices: Sequence[str | None]) -> None:
    if not any(value is choice or (isinstance(value, str) and value == choice) for choice in choices):
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))} (got {value!r}).")


def _coordinates(name: str, values: Any) -> Tensor:
    """``values`` as a float64 CPU vector of at least one finite number."""
    try:
        grid = torch.as_tensor(values, dtype=torch.float64).cpu()
    except (TypeError, ValueError, RuntimeError):
        grid = None
    if grid is None or grid.dim() != 1 or grid.numel() == 0 or not torch.isfinite(grid).all():
        raise ValueError(f"{name} must be a non-empty one-dimensional sequence of finite numbers (got {values!r}).")
    return grid


def _check_directions(directions: Any, named: Sequence[tuple[str, Tensor]], kind: str, ys: Tensor | None) -> None:
    """One or two directions (two exactly when ``ys`` is given), each one tensor per entry of its shape."""
    if not isinstance(directions, (list, tuple)) or len(directions) not in (1, 2) \
            or not all(isinstance(direction, (list, tuple)) for direction in directions):
        raise ValueError(f"directions must be a list of one or two directions, each a list of tensors "
                         f"(got {_described(directions)}).")
    if (len(directions) == 2) != (ys is not None):
        raise ValueError(f"ys must be given exactly when there are two directions (got {len(directions)} "
                         f"direction{'s' if len(directions) == 2 else ''} and {'no ys' if ys is None else 'ys'}).")
    for which, direction in enumerate(directions):
        if len(direction) != len(named):
            raise ValueError(f"directions[{which}] must hold one tensor per entry of model.{ENTRIES[kind]}, "
                             f"{len(named)} (got {len(direction)}).")
        for (name, entry), d in zip(named, direction):
            if not isinstance(d, Tensor) or d.shape != entry.shape:
                got = f"shape {tuple(d.shape)}" if isinstance(d, Tensor) else type(d).__name__
                raise ValueError(f"directions[{which}] must hold a tensor of shape {tuple(entry.shape)} for "
                                 f"{name} (got {got}).")


def _check_same_entries(mine: Sequence[tuple[str, Tensor]], theirs: Sequence[tuple[str, Tensor]], kind: str) -> None:
    """``other`` has the entries of ``model``: the same names and shapes, in the same order."""
    for a, b in itertools.zip_longest(mine, theirs):
        if a is None or b is None or a[0] != b[0] or a[1].shape != b[1].shape:
            expected = "no entry" if a is None else f"{a[0]} of shape {tuple(a[1].shape)}"
            got = "no entry" if b is None else f"{b[0]} of shape {tuple(b[1].shape)}"
            raise ValueError(f"other.{ENTRIES[kind]} must have the names and shapes of model.{ENTRIES[kind]} "
                             f"(got {got} where model has {expected}).")


def _described(value: Any) -> str:
    """A short description of what was passed as directions."""
    if isinstance(value, (list, tuple)):
        kinds = sorted({type(item).__name__ for item in value})
        return f"a {type(value).__name__} of {len(value)} {'/'.join(kinds) if kinds else 'items'}"
    return type(value).__name__
