"""The measures a run asks for (``trainer.sharpness_measures``; README, "Sharpness"): each on its fixed subset of the
training split, with the task's unsmoothed loss, under :func:`measurement_mode`, drawing from its own
``torch.Generator(device).manual_seed(seed)``, its progress counted; the arrays and figures of ``esd``,
``landscape1d``, ``landscape2d`` and ``interpolation`` go to a directory, the numbers into one dict.

``hessian`` is :func:`measure_sharpness` (its keys at the top level, ``m_sharpness`` with it when
``m_rho > 0``); the others get a key each: ``esd`` (``lambda_min``, ``lambda_max``: the mean extreme
nodes, ``negative_mass``), ``worst_case`` and ``average`` (on the m-sharpness subset: ``m_samples``
examples in batches of ``m``), ``landscape1d``, ``landscape2d`` (``loss_min``, ``loss_max``) and
``interpolation`` (``to``).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from flatmin.data.splits import DataSplits
from flatmin.data.task import Task
from flatmin.errors import ConfigError
from flatmin.sharpness.adversarial import average_sharpness, worst_case_sharpness
from flatmin.sharpness.hessian import LossFn, subset_hessian
from flatmin.sharpness.landscape import interpolate, loss_surface, parse_grid, random_direction
from flatmin.sharpness.measure import (SharpnessOptions, config_values, fixed_subset_batches, measure_sharpness,
                                       measurement_mode, select_parameters)
from flatmin.sharpness.progress import Progress
from flatmin.sharpness.spectrum import density_curve, spectral_density
from flatmin.validation import measure_names

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class AnalysisOptions:
    """Which measures, and the settings of all but ``hessian`` (``trainer.sharpness_<field>``)."""

    measures: str = "hessian"
    esd_iterations: int = 100          # Lanczos steps (PyHessian's iter)
    esd_vectors: int = 1               # start vectors (n_v)
    worst_rho: float = 0.1
    worst_norm: str = "linf"
    worst_steps: int = 20
    average_rho: float = 0.1
    average_norm: str = "l2"
    average_draws: int = 20
    adaptive: bool = False             # both sharpness measures
    normalize_logits: bool = False     # both sharpness measures
    landscape_x: str = "-1:1:51"
    landscape_y: str = "-1:1:51"
    landscape_norm: str = "filter"     # or none
    landscape_ignore: str = "biasbn"   # or none
    landscape_kind: str = "weights"
    interpolate_to: str | None = None  # run directory or checkpoint at alpha = 1
    interpolate_alpha: str = "-0.5:1.5:401"
    interpolate_kind: str = "states"

    @classmethod
    def from_config(cls, cfg: DictConfig) -> AnalysisOptions:
        values = config_values(cls, cfg)
        values["measures"] = ",".join(measure_names(values["measures"]))
        return cls(**values)

    @property
    def names(self) -> list[str]:
        return self.measures.split(",")


@dataclass
class Setting:
    """What the measures share: the model, the loss, the data, the options, where the files go."""

    model: nn.Module
    loss_fn: LossFn
    splits: DataSplits
    device: torch.device
    options: SharpnessOptions
    analysis: AnalysisOptions
    out: Path
    other: nn.Module | None
    progress_bar: bool

    @cached_property
    def batches(self) -> list[tuple[Any, Tensor]]:
        """The fixed subset (``samples`` examples in batches of ``batch_size``)."""
        options = self.options
        return fixed_subset_batches(self.splits.train, options.samples, options.batch_size, options.seed,
                                    self.splits.collate)

    @cached_property
    def m_batches(self) -> list[tuple[Any, Tensor]]:
        """The m-sharpness subset (``m_samples`` examples in batches of ``m``)."""
        options = self.options
        return fixed_subset_batches(self.splits.train, options.m_samples, options.m, options.seed, self.splits.collate)

    @cached_property
    def params(self) -> list[Tensor]:
        return [p for _, p in select_parameters(self.model, self.options.params)]

    def generator(self) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(self.options.seed)

    def progress(self, name: str, total: int, unit: str, every: int = 1) -> Progress:
        return Progress(name, total, unit, self.progress_bar, every)


def measure_run(model: nn.Module, splits: DataSplits, cfg: DictConfig, device: torch.device, out: Path,
                other: nn.Module | None = None, progress_bar: bool = False) -> dict[str, Any]:
    """The measures of ``cfg`` (``trainer.sharpness_*``) on ``model`` (on ``device``) and the run's
    training split, with its task's unsmoothed loss (cross-entropy; MSE for STS-B) and batch collation;
    ``other``: the model at α = 1 of ``interpolation``. Arrays and figures go to ``out``. Refusals that
    need the model (``esd_iterations`` above the selected parameters) come before anything is measured."""
    started = time.perf_counter()
    analysis = AnalysisOptions.from_config(cfg)
    setting = Setting(model, Task.from_config(cfg.dataset).loss_fn(), splits, device,
                      SharpnessOptions.from_config(cfg), analysis, Path(out), other, progress_bar)
    check_measurable(setting)
    log.info("%s", start_line(setting))
    result: dict[str, Any] = {"measures": analysis.names}
    if "hessian" in analysis.names:
        result.update(measure_sharpness(model, splits.train, setting.options, device, setting.loss_fn, splits.collate,
                                        progress_bar))
        log.info("hessian: %s", in_brief(result))
    else:
        result.update(asdict(setting.options))
    for name in (name for name in analysis.names if name != "hessian"):
        measure_started = time.perf_counter()
        with measurement_mode(model):
            measured, arrays = MEASURES[name](setting)
        if arrays is not None:
            from flatmin.sharpness.outputs import write_arrays  # matplotlib, only for the measures with figures
            measured = {**write_arrays(name, arrays, setting.out), **measured}
        result[name] = {**measured, "time_s": time.perf_counter() - measure_started}
        log.info("%s: %s", name, in_brief({name: result[name]}))
    result["time_s"] = time.perf_counter() - started
    return result


def check_measurable(setting: Setting) -> None:
    """``esd_iterations`` at most the number of entries of the selected parameters."""
    iterations = setting.analysis.esd_iterations
    entries = sum(p.numel() for p in setting.params)
    if "esd" in setting.analysis.names and iterations > entries:
        raise ConfigError(f"trainer.sharpness_esd_iterations must be at most the number of entries of the selected "
                          f"parameters (trainer.sharpness_params={setting.options.params}), {entries} "
                          f"(got {iterations}).")


def start_line(setting: Setting) -> str:
    """What is measured, of which model, on how many examples."""
    names, options = setting.analysis.names, setting.options
    size = len(setting.splits.train)
    line = (f"sharpness: measuring {', '.join(names)} of {type(setting.model).__name__} on "
            f"{min(options.samples, size)} training examples (seed {options.seed})")
    if {"worst_case", "average"} & set(names):
        line += f", worst_case/average on {min(options.m_samples, size)} in batches of {options.m}"
    return f"{line}; parameters: {options.params} ({sum(p.numel() for p in setting.params):,})"


Measured = tuple[dict[str, Any], dict[str, Any] | None]   # the numbers, and the arrays for the files


def esd(setting: Setting) -> Measured:
    """PyHessian's SLQ on the subset Hessian, smoothed by ``density_curve``'s defaults."""
    iterations, vectors = setting.analysis.esd_iterations, setting.analysis.esd_vectors
    with setting.progress("esd", iterations * vectors, "Hessian-vector products") as progress:
        hvp = progress.counting(subset_hessian(setting.model, setting.loss_fn, setting.batches, setting.params,
                                               setting.device))
        nodes, weights = spectral_density(hvp, setting.params, iterations, vectors, setting.generator())
    grid, density = density_curve(nodes, weights)
    return ({"lambda_min": nodes.min(dim=1).values.mean().item(), "lambda_max": nodes.max(dim=1).values.mean().item(),
             "negative_mass": (weights * (nodes < 0)).sum(dim=1).mean().item(), "iterations": iterations,
             "vectors": vectors},
            {"nodes": nodes, "weights": weights, "grid": grid, "density": density, "iterations": iterations,
             "vectors": vectors})


def worst_case(setting: Setting) -> Measured:
    """m-APGD worst-case sharpness on the m-sharpness subset."""
    a = setting.analysis
    batches = setting.m_batches
    with setting.progress("worst_case", len(batches) * (1 + 2 * a.worst_steps), "loss evaluations") as progress:
        measured = worst_case_sharpness(setting.model, progress.counting(setting.loss_fn), batches, a.worst_rho,
                                        a.worst_norm, a.adaptive, a.worst_steps, params=setting.params,
                                        normalize_logits=a.normalize_logits)
    return {**measured, "rho": a.worst_rho, "norm": a.worst_norm, "steps": a.worst_steps, "adaptive": a.adaptive,
            "normalize_logits": a.normalize_logits}, None


def average(setting: Setting) -> Measured:
    """Average sharpness over ``average_draws`` noise draws per batch of the m-sharpness subset."""
    a = setting.analysis
    batches = setting.m_batches
    with setting.progress("average", len(batches) * (1 + a.average_draws), "loss evaluations") as progress:
        measured = average_sharpness(setting.model, progress.counting(setting.loss_fn), batches, a.average_rho,
                                     a.average_draws, a.average_norm, a.adaptive, params=setting.params,
                                     normalize_logits=a.normalize_logits, generator=setting.generator())
    return {**measured, "rho": a.average_rho, "norm": a.average_norm, "draws": a.average_draws,
            "adaptive": a.adaptive, "normalize_logits": a.normalize_logits}, None


def landscape1d(setting: Setting) -> Measured:
    """The loss along a random direction (``landscape2d``'s x direction)."""
    xs = parse_grid(setting.analysis.landscape_x)
    surface = _surface(setting, "landscape1d", [_direction(setting, setting.generator())], xs)
    return _landscape_numbers(setting, surface), {"x": xs, **surface}


def landscape2d(setting: Setting) -> Measured:
    """The loss over the plane of two random directions, x then y drawn from one generator."""
    xs, ys = parse_grid(setting.analysis.landscape_x), parse_grid(setting.analysis.landscape_y)
    generator = setting.generator()
    directions = [_direction(setting, generator), _direction(setting, generator)]
    surface = _surface(setting, "landscape2d", directions, xs, ys)
    return _landscape_numbers(setting, surface), {"x": xs, "y": ys, **surface}


def interpolation(setting: Setting) -> Measured:
    """The loss on the line from this model (α = 0) to ``interpolate_to`` (α = 1)."""
    a = setting.analysis
    alphas = parse_grid(a.interpolate_alpha)
    every = len(setting.batches)
    with setting.progress("interpolation", len(alphas), "points", every) as progress:
        surface = interpolate(setting.model, setting.other, progress.counting(setting.loss_fn), setting.batches,
                              alphas, a.interpolate_kind)
    return ({"to": a.interpolate_to, "alpha": a.interpolate_alpha, "kind": a.interpolate_kind},
            {"alpha": alphas, **surface, "to": a.interpolate_to})


def _direction(setting: Setting, generator: torch.Generator) -> list[Tensor]:
    a = setting.analysis
    return random_direction(setting.model, generator, _none(a.landscape_norm), _none(a.landscape_ignore),
                            a.landscape_kind)


def _surface(setting: Setting, name: str, directions: list[list[Tensor]], xs: Tensor,
             ys: Tensor | None = None) -> dict[str, Any]:
    points = len(xs) * (1 if ys is None else len(ys))
    with setting.progress(name, points, "points", len(setting.batches)) as progress:
        return loss_surface(setting.model, progress.counting(setting.loss_fn), setting.batches, directions, xs, ys,
                            setting.analysis.landscape_kind)


def _landscape_numbers(setting: Setting, surface: dict[str, Any]) -> dict[str, Any]:
    a = setting.analysis
    loss = surface["loss"]
    finite = loss[torch.isfinite(loss)]
    return {"loss_min": finite.min().item() if len(finite) else math.nan,
            "loss_max": finite.max().item() if len(finite) else math.nan,
            "x": a.landscape_x, "y": a.landscape_y if loss.dim() == 2 else None, "norm": a.landscape_norm,
            "ignore": a.landscape_ignore, "kind": a.landscape_kind}


def _none(value: str) -> str | None:
    """The config's ``none`` as the API's None."""
    return None if value == "none" else value


MEASURES: dict[str, Callable[[Setting], Measured]] = {
    "esd": esd, "worst_case": worst_case, "average": average, "landscape1d": landscape1d,
    "landscape2d": landscape2d, "interpolation": interpolation}


def in_brief(result: dict[str, Any]) -> str:
    """The numbers of a measurement in one line: ``trace 123.4, λ_max 12.3, worst-case 0.012, …``."""
    parts = []
    if "trace" in result:
        parts += [f"trace {result['trace']:.4g}", f"λ_max {result['lambda_max']:.4g}"]
    if "m_sharpness" in result:
        parts.append(f"m-sharpness {result['m_sharpness']:.4g}")
    if "esd" in result:
        parts.append(f"ESD λ {result['esd']['lambda_min']:.4g} … {result['esd']['lambda_max']:.4g} "
                     f"(negative mass {result['esd']['negative_mass']:.3g})")
    for key, label in (("worst_case", "worst-case"), ("average", "average")):
        if key in result:
            parts.append(f"{label} {result[key]['sharpness']:.4g}")
    for key in ("landscape1d", "landscape2d"):
        if key in result:
            parts.append(f"{key} loss {result[key]['loss_min']:.4g} … {result[key]['loss_max']:.4g}")
    if "interpolation" in result:
        parts.append(f"interpolation to {result['interpolation']['to']}")
    return ", ".join(parts)
