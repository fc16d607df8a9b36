"""The measures' figures (matplotlib, Agg, PNG), each one a paper could print: the spectral density on a
log scale as PyHessian plots it (``density_plot.py`` ``get_esd_plot``), the loss and accuracy along a
direction or an interpolation, and contours of a 2-D loss surface. Kept apart from the measures, so a
training run that imports :mod:`flatmin.sharpness` does not import matplotlib."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from torch import Tensor

#: What PyHessian's plot adds to the density, so that the log scale shows zeros.
PLOT_FLOOR = 1e-7


def plot_density(grid: Tensor, density: Tensor, path: Path, title: str | None = None) -> Path:
    """PyHessian's plot of a :func:`density_curve` (``semilogy(grid, density + 1e-7)``) as a PNG at
    ``path``; returns ``path``."""
    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.subplots()
    axes.semilogy(np.asarray(grid), np.asarray(density) + PLOT_FLOOR)
    axes.set(xlabel="eigenvalue", ylabel=r"density + $10^{-7}$ (log scale)")
    axes.locator_params(axis="x", nbins=6)  # long tick labels (-0.0075) stay apart
    if title:
        axes.set_title(title)
    path = Path(path)
    figure.savefig(path, dpi=100)
    return path


def plot_line(xs: Any, loss: Any, accuracy: Any, path: Path | str, xlabel: str) -> Path:
    """The loss (left axis) and, unless None, the accuracy (right axis) against ``xs``, as a PNG; where
    the loss is not finite the span is shaded and the accuracy (of NaN outputs) left out."""
    xs, loss = np.asarray(xs, dtype=float), np.asarray(loss, dtype=float)
    broken = ~np.isfinite(loss)
    figure = Figure(figsize=(6.5, 4.2), layout="constrained")
    axes = figure.subplots()
    marker = "." if len(xs) < 30 else None                      # the points of a coarse grid
    handles = axes.plot(xs, loss, color="C0", marker=marker, label="loss")
    axes.set(xlabel=xlabel, xlim=(xs.min(), xs.max()) if len(xs) > 1 else None)
    axes.set_ylabel("loss", color="C0")
    axes.tick_params(axis="y", colors="C0")
    axes.grid(alpha=0.3)
    if broken.any():
        step = np.abs(np.diff(xs)).min() / 2 if len(xs) > 1 else 0.5
        for x in xs[broken]:
            axes.axvspan(x - step, x + step, color="0.85", linewidth=0)
        handles.append(Patch(color="0.85", label="loss not finite"))
    if accuracy is not None:
        twin = axes.twinx()
        handles += twin.plot(xs, np.where(broken, np.nan, np.asarray(accuracy, dtype=float)), color="C3",
                             linestyle="--", marker=marker, label="accuracy")
        twin.set_ylabel("accuracy (%)", color="C3")
        twin.tick_params(axis="y", colors="C3")
        twin.set_ylim(-2, 102)
    figure.legend(handles=handles, loc="outside upper center", ncols=len(handles), fontsize="small", frameon=False)
    figure.savefig(path, dpi=100)
    return Path(path)


def plot_contours(xs: Any, ys: Any, loss: Any, path: Path | str, equal_aspect: bool = False) -> Path:
    """Labelled contours of the 2-D loss (``loss[iy, ix]``) over (x, y) with a colour bar, as a PNG; the
    levels are spaced logarithmically when the loss is positive and spans more than a decade. A grid
    narrower than 2 points, or a loss without two distinct finite values, is drawn as colour cells."""
    xs, ys, loss = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float), np.asarray(loss, dtype=float)
    finite = loss[np.isfinite(loss)]
    figure = Figure(figsize=(6, 5), layout="constrained")
    axes = figure.subplots()
    if min(len(xs), len(ys)) >= 2 and len(np.unique(finite)) >= 2:
        low, high = finite.min(), finite.max()
        logarithmic = low > 0 and high > 10 * low
        levels = np.geomspace(low, high, 16) if logarithmic else np.linspace(low, high, 16)
        norm = LogNorm(low, high) if logarithmic else Normalize(low, high)
        filled = axes.contourf(xs, ys, loss, levels=levels, norm=norm, cmap="viridis", alpha=0.6)
        lines = axes.contour(xs, ys, loss, levels=levels, colors="0.25", linewidths=0.8)
        axes.clabel(lines, levels=levels[1::3], fontsize="small", fmt="%.3g")
        bar = figure.colorbar(filled, ax=axes, label="loss" + (" (log scale)" if logarithmic else ""))
        bar.set_ticks(levels[::3], labels=[f"{level:.3g}" for level in levels[::3]])
        if not np.isfinite(loss).all():
            axes.set_title("white: loss not finite", fontsize="small")
    else:
        cells = axes.pcolormesh(_cell_edges(xs), _cell_edges(ys), loss, cmap="viridis")
        figure.colorbar(cells, ax=axes, label="loss")
    if xs.min() <= 0 <= xs.max() and ys.min() <= 0 <= ys.max():
        axes.plot([0], [0], marker="+", color="black", markersize=10, linestyle="none")  # the model itself
    axes.set(xlabel="x", ylabel="y")
    if equal_aspect:
        axes.set_aspect("equal")
    figure.savefig(path, dpi=100)
    return Path(path)


def _cell_edges(centres: np.ndarray) -> np.ndarray:
    """The edges of cells around ``centres`` (midpoints; a lone centre gets a cell of width 1)."""
    if len(centres) == 1:
        return centres + np.array([-0.5, 0.5])
    middles = (centres[1:] + centres[:-1]) / 2
    return np.concatenate([[2 * centres[0] - middles[0]], middles, [2 * centres[-1] - middles[-1]]])
