"""``python -m flatmin.sharpness <run dir or checkpoint>``: measure a trained model after the fact.

The model and the data are rebuilt from the run's own config by ``flatmin.assembly.assemble``, as
the run built them, so this works for every dataset and model flatmin can train. Options default to the run's
``trainer.sharpness_*`` settings (or the NSO release's defaults for runs made before them) and
are validated like the config; bad input ends in one sentence and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf

from flatmin.assembly import assemble
from flatmin.errors import CheckpointError, FlatminError
from flatmin.rundir import load_checkpoint, write_json
from flatmin.runtime import Runtime
from flatmin.sharpness.measure import SharpnessOptions, measure_run
from flatmin.validation import validate

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
}


def load_run(path: Path, checkpoint: str = "last") -> tuple[DictConfig, Path, dict[str, Any]]:
    """The config, checkpoint path and checkpoint of a run. ``path`` is a run directory (its
    ``<checkpoint>.pt`` is used) or a checkpoint file; the config is the ``config.yaml`` beside the
    checkpoint, else the one a ``last.pt`` carries. Anything missing or unreadable is a
    ``CheckpointError``."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"No run directory or checkpoint at {path}.")
    checkpoint_path = path / f"{checkpoint}.pt" if path.is_dir() else path
    state = load_checkpoint(checkpoint_path, required=("model",))
    config_path = checkpoint_path.parent / "config.yaml"
    if config_path.is_file():
        return OmegaConf.load(config_path), checkpoint_path, state
    if isinstance(state.get("config"), dict):
        return OmegaConf.create(state["config"]), checkpoint_path, state
    raise CheckpointError(f"No config.yaml beside {checkpoint_path}, and the checkpoint carries none: the model "
                          "cannot be rebuilt without the run's config.")


def measure_checkpoint(path: Path, checkpoint: str = "last", device: str = "auto",
                       **overrides: Any) -> dict[str, Any]:
    """Rebuild a run's model and training split, load the weights and measure. ``overrides``
    (``samples=``, ``top_k=`` …, None keeps the run's setting) replace ``trainer.sharpness_<name>``."""
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
    result = measure_run(parts.module, parts.splits, cfg, runtime.device)
    return {"checkpoint": str(checkpoint_path), "model": type(parts.module).__name__, "dataset": cfg.dataset.name,
            "device": str(runtime.device), **result}


def describe(result: dict[str, Any]) -> str:
    """A measurement in a few lines, for the terminal."""
    eigenvalues = ", ".join(f"{value:.6g}" for value in result["eigenvalues"])
    return "\n".join([
        f"sharpness of {result['checkpoint']} ({result['model']} on {result['dataset']}, {result['device']}, "
        "fp32, eval mode)",
        f"  subset: {result['samples']} training examples (seed {result['seed']}) in {result['batches']} batches "
        f"of up to {result['batch_size']}, aggregate {result['aggregate']}",
        f"  parameters: {result['params']} ({result['parameters']:,})",
        f"  Hessian trace (Hutchinson, <= {result['max_iter']} vectors, tol {result['tol']:g}): {result['trace']:.6g}",
        f"  top-{len(result['eigenvalues'])} eigenvalues (power iteration, <= {result['max_iter']} iterations each): "
        f"{eigenvalues}",
        *([f"  {result['m_norm']} m-sharpness (rho {result['m_rho']:g}, m {result['m']}, n {result['m_samples']}, "
           f"{result['m_steps']} ascent steps): {result['m_sharpness']:.6g}"] if "m_sharpness" in result else []),
        f"  time: {result['time_s']:.1f} s",
    ])


def command_line() -> argparse.ArgumentParser:
    """The command's arguments: the run, and an option per field of :class:`SharpnessOptions`."""
    parser = argparse.ArgumentParser(prog="python -m flatmin.sharpness",
                                     description="Hessian trace and top eigenvalues of a trained flatmin model.")
    parser.add_argument("path", type=Path, help="a run directory, or a checkpoint file inside one")
    parser.add_argument("--checkpoint", choices=("last", "best"), default="last",
                        help="which checkpoint of a run directory (default: last, the final model)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--json", type=Path, help="also write the result to this JSON file")
    for option in fields(SharpnessOptions):
        parser.add_argument(f"--{option.name.replace('_', '-')}", dest=option.name, type=type(option.default),
                            help=f"{OPTION_HELP[option.name]} (default: the run's trainer.sharpness_{option.name})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, measure, print; write ``--json`` when asked. Returns the exit status."""
    args = command_line().parse_args(argv)
    overrides = {option.name: getattr(args, option.name) for option in fields(SharpnessOptions)}
    try:
        result = measure_checkpoint(args.path, args.checkpoint, args.device, **overrides)
    except FlatminError as error:
        print(f"flatmin.sharpness: error: {error}", file=sys.stderr)
        return 2
    print(describe(result))
    if args.json:
        write_json(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
