"""The arrays of the ESD, landscape and interpolation measures as ``<measure>.json`` (non-finite numbers
as null) and their figures as ``<measure>.png`` in one directory. Imports matplotlib: the measurement
imports this module only when one of those measures runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from flatmin.rundir import write_json
from flatmin.sharpness.plots import plot_contours, plot_density, plot_line


def write_arrays(name: str, arrays: dict[str, Any], out: Path) -> dict[str, str]:
    """``out/<name>.json`` and ``out/<name>.png`` (the directory is made); returns ``{"file", "plot"}``."""
    out.mkdir(parents=True, exist_ok=True)
    file, plot = out / f"{name}.json", out / f"{name}.png"
    write_json({key: value.tolist() if isinstance(value, Tensor) else value for key, value in arrays.items()}, file)
    if name == "esd":
        plot_density(arrays["grid"], arrays["density"], plot,
                     title=f"Hessian eigenvalue density ({arrays['iterations']} Lanczos steps, "
                           f"{arrays['vectors']} start vector{'s' if arrays['vectors'] > 1 else ''})")
    elif name == "landscape1d":
        plot_line(arrays["x"], arrays["loss"], arrays["accuracy"], plot, "x (step along a random direction)")
    elif name == "landscape2d":
        plot_contours(arrays["x"], arrays["y"], arrays["loss"], plot)
    else:
        plot_line(arrays["alpha"], arrays["loss"], arrays["accuracy"], plot,
                  f"α (0: this model, 1: {Path(arrays['to']).parent.name}/{Path(arrays['to']).name})")
    return {"file": str(file), "plot": str(plot)}
