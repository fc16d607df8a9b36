"""``python -m flatmin.sharpness <run dir or checkpoint>``: measure a trained model after the fact.

The model and the data are rebuilt from the run's own config by ``flatmin.assembly.assemble``, as
the run built them, so this works for every dataset and model flatmin can train. Options default to the run's
``trainer.sharpness_*`` settings (or the NSO release's defaults for runs made before them) and
are validated like the config; bad input ends in one sentence and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any, Sequence

from omegaconf import OmegaConf

from flatmin.assembly import assemble
from flatmin.errors import CheckpointError, FlatminError
from flatmin.rundir import write_json
from flatmin.runtime import Runtime
from flatmin.sharpness.checkpoints import load_other, load_run
from flatmin.sharpness.measure import SharpnessOptions
from flatmin.sharpness.measures import MEASURES, AnalysisOptions, in_brief, measure_run
from flatmin.validation import validate

#: The settings a measure's line shows.
SETTINGS = ("iterations", "vectors", "rho", "norm", "steps", "draws", "adaptive", "normalize_logits", "x", "y",
            "ignore", "kind", "alpha")

OPTION_HELP = {
    "samples": "training examples in the fixed subset",
    "batch_size": "mini-batch size",
    "top_k": "number of top eigenvalues",
    "max_iter": "Hutchinson vectors, and power iterations per eigenvalue",
    "tol": "relative change that stops an iteration",
    "params": "all, conv_and_head, or a regular expression on parameter names",
    "aggregate": "batch_mean (mean of per-batch estimates, the NSO release) or subset (the subset's Hessian)",
    "seed": "seed of the subset and of the random vectors",
    "m_rho": "radius of adaptive m-sharpness (0: not measured)",
    "m": "examples per m-sharpness batch",
    "m_samples": "examples in the m-sharpness subset",
    "m_steps": "gradient-ascent steps per m-sharpness batch",
    "m_norm": "adaptive or l2 ball for m-sharpness",
    "measures": "comma-separated: hessian, esd, worst_case, average, landscape1d, landscape2d, interpolation",
    "esd_iterations": "Lanczos steps of the spectral density (PyHessian's iter)",
    "esd_vectors": "start vectors of the spectral density (PyHessian's n_v)",
    "worst_rho": "radius of worst-case sharpness",
    "worst_norm": "linf or l2 ball of worst-case sharpness",
    "worst_steps": "m-APGD steps of worst-case sharpness",
    "average_rho": "noise scale of average sharpness",
    "average_norm": "l2 (Gaussian) or linf (uniform) noise of average sharpness",
    "average_draws": "noise draws per batch of average sharpness",
    "adaptive": "scale the perturbations of worst-case and average sharpness by |w|",
    "normalize_logits": "normalise the logits in worst-case and average sharpness",
    "landscape_x": "grid min:max:num along x (write --landscape-x=-1:1:51)",
    "landscape_y": "grid min:max:num along y (landscape2d)",
    "landscape_norm": "direction normalisation: filter, layer, weight, dfilter, dlayer or none",
    "landscape_ignore": "biasbn (no move of biases and BatchNorm) or none",
    "landscape_kind": "weights (parameters) or states (state_dict, running statistics too)",
    "interpolate_to": "run directory or checkpoint of the model at alpha = 1",
    "interpolate_alpha": "grid min:max:num of alpha",
    "interpolate_kind": "states or weights",
}


def measure_checkpoint(path: Path, checkpoint: str = "last", device: str = "auto", out: Path | None = None,
                       **overrides: Any) -> dict[str, Any]:
    """Rebuild a run's model and training split, load the weights and measure; arrays and figures go to
    ``out`` (default: ``sharpness/`` beside the checkpoint). ``overrides`` (``samples=``, ``measures=``
    …, None keeps the run's setting) replace ``trainer.sharpness_<name>``."""
    cfg, checkpoint_path, state = load_run(path, checkpoint)
    for name, value in overrides.items():
        if value is not None:
            OmegaConf.update(cfg, f"trainer.sharpness_{name}", value, force_add=True)
    validate(cfg, prefix="trainer.sharpness_")
    runtime = Runtime.local(device, precision="fp32")
    parts = assemble(cfg, runtime)
    try:
        parts.module.load_state_dict(state["model"])
    except RuntimeError as error:
        raise CheckpointError(f"Checkpoint {checkpoint_path} does not fit the model of its config "
                              f"({str(error).splitlines()[0]}).") from error
    other = None
    if "interpolation" in AnalysisOptions.from_config(cfg).names:
        other, target = load_other(cfg.trainer.sharpness_interpolate_to, parts.module, checkpoint)
        OmegaConf.update(cfg, "trainer.sharpness_interpolate_to", str(target))
    result = measure_run(parts.module, parts.splits, cfg, runtime.device, out or checkpoint_path.parent / "sharpness",
                         other, progress_bar=True)
    return {"checkpoint": str(checkpoint_path), "model": type(parts.module).__name__, "dataset": cfg.dataset.name,
            "device": str(runtime.device), **result}


def describe(result: dict[str, Any]) -> str:
    """A measurement in a line per measure, for the terminal; the last line has the numbers in brief."""
    lines = [f"sharpness of {result['checkpoint']} ({result['model']} on {result['dataset']}, {result['device']}, "
             "fp32, eval mode)"]
    if "trace" in result:
        eigenvalues = ", ".join(f"{value:.6g}" for value in result["eigenvalues"])
        lines += [
            f"  subset: {result['samples']} training examples (seed {result['seed']}) in {result['batches']} batches "
            f"of up to {result['batch_size']}, aggregate {result['aggregate']}",
            f"  parameters: {result['params']} ({result['parameters']:,})",
            f"  Hessian trace (Hutchinson, <= {result['max_iter']} vectors, tol {result['tol']:g}): "
            f"{result['trace']:.6g}",
            f"  top-{len(result['eigenvalues'])} eigenvalues (power iteration, <= {result['max_iter']} iterations "
            f"each): {eigenvalues}",
            *([f"  {result['m_norm']} m-sharpness (rho {result['m_rho']:g}, m {result['m']}, n {result['m_samples']}, "
               f"{result['m_steps']} ascent steps): {result['m_sharpness']:.6g}"] if "m_sharpness" in result else [])]
    if set(MEASURES) & set(result):
        lines.append(f"  parameters: {result['params']} (worst_case, average, esd); subsets: {result['samples']} "
                     f"training examples, {result['m_samples']} in batches of {result['m']} (worst_case, average)")
    for name in MEASURES:
        if name in result:
            measured = result[name]
            settings = ", ".join(f"{key} {value}" for key, value in measured.items()
                                 if key in SETTINGS and value is not None)
            files = f" → {measured['file']}, {Path(measured['plot']).name}" if "file" in measured else ""
            lines.append(f"  {name} ({settings}): {in_brief({name: measured})}{files}")
    lines += [f"  time: {result['time_s']:.1f} s", f"flatmin.sharpness: {in_brief(result)}"]
    return "\n".join(lines)


def command_line() -> argparse.ArgumentParser:
    """The command's arguments: the run, and an option per field of :class:`SharpnessOptions` and
    :class:`AnalysisOptions`. Numbers are read leniently (``--worst-rho x`` is the config's sentence on
    the value, not argparse's); booleans are ``--adaptive/--no-adaptive``."""
    parser = argparse.ArgumentParser(prog="python -m flatmin.sharpness",
                                     description="Sharpness, spectral density and loss landscapes of a trained "
                                                 "flatmin model.")
    parser.add_argument("path", type=Path, help="a run directory, or a checkpoint file inside one")
    parser.add_argument("--checkpoint", choices=("last", "best"), default="last",
                        help="which checkpoint of a run directory (default: last, the final model)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--json", type=Path, help="also write the result to this JSON file")
    parser.add_argument("--out", type=Path, help="directory of the arrays and figures (default: sharpness/ beside "
                                                 "the checkpoint)")
    for option in (*fields(SharpnessOptions), *fields(AnalysisOptions)):
        flag, default = f"--{option.name.replace('_', '-')}", f"the run's trainer.sharpness_{option.name}"
        if isinstance(option.default, bool):
            parser.add_argument(flag, dest=option.name, action=argparse.BooleanOptionalAction,
                                help=f"{OPTION_HELP[option.name]} (default: {default})")
        else:
            parser.add_argument(flag, dest=option.name, metavar=option.name.upper(),
                                type=_number if isinstance(option.default, (int, float)) else str,
                                help=f"{OPTION_HELP[option.name]} (default: {default})")
    return parser


def _number(text: str) -> int | float | str:
    """An int or float as the config would read it; anything else as given, for validation to refuse."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, measure, print; write ``--json`` when asked. Returns the exit status."""
    args = command_line().parse_args(argv)
    logging.basicConfig(format="%(message)s")
    logging.getLogger("flatmin.sharpness").setLevel(logging.INFO)  # the start line, and progress off a terminal
    overrides = {option.name: getattr(args, option.name)
                 for option in (*fields(SharpnessOptions), *fields(AnalysisOptions))}
    try:
        result = measure_checkpoint(args.path, args.checkpoint, args.device, args.out, **overrides)
    except FlatminError as error:
        print(f"flatmin.sharpness: error: {error}", file=sys.stderr)
        return 2
    print(describe(result))
    if args.json:
        write_json(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
