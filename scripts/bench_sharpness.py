"""What each analysis measure costs, per unit of its work, as a ratio to one SGD training step.

    python scripts/bench_sharpness.py [--model resnet18] [--samples 256] [--batch 128] [--units 3]
                                      [--device cpu] [--json out.json]

On ``--samples`` random CIFAR-sized images (``--batch`` to a batch) and the model of ``model=<name>``
(``flatmin/conf/model/``; ResNet-18 by default, fp32, eval mode as the measures use it), each measure
runs ``--units`` units of its work through the API a run uses (``flatmin.sharpness``):

* ``hessian``: Hessian-vector products over the subset (Hutchinson's trace and power iteration make
  one per vector or iteration: up to ``max_iter`` each);
* ``esd``: Lanczos steps (``esd_iterations`` × ``esd_vectors`` per measurement);
* ``worst_case``: m-APGD steps over the subset's batches (``worst_steps`` per measurement);
* ``average``: noise draws over the subset's batches (``average_draws``);
* ``landscape``: surface points (51 for ``landscape1d``, 51 × 51 for ``landscape2d``, 401 for the
  interpolation).

The figure is the median seconds per unit over the rounds, and that over the median SGD step on one
batch (forward, backward, step), measured in the same process. A measurement's cost is then about its
units × the per-unit figure × (samples / batch) SGD steps.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import date
from pathlib import Path
from typing import Callable

import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from torch import nn

from flatmin.sharpness import (average_sharpness, loss_surface, random_direction, spectral_density, subset_hessian,
                               worst_case_sharpness)
from flatmin.sharpness.measure import measurement_mode


def build_model(name: str, device: torch.device) -> nn.Module:
    """``model=<name>`` on CIFAR-10's shapes, as a run builds it."""
    with initialize_config_module(config_module="flatmin.conf", version_base="1.3"):
        cfg = compose("config", overrides=["dataset=cifar10", f"model={name}"])
    return instantiate(cfg.model).to(device)


def timed(work: Callable[[], object], rounds: int) -> float:
    """The median seconds of ``work`` over ``rounds`` runs, after one untimed run."""
    work()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--units", type=int, default=3, help="units of each measure's work per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.samples, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 10, (args.samples,), generator=generator)
    batches = [(images[i:i + args.batch].to(device), labels[i:i + args.batch].to(device))
               for i in range(0, args.samples, args.batch)]
    model = build_model(args.model, device)
    loss_fn = nn.CrossEntropyLoss()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.0)        # lr 0: every round measures the same weights

    def sgd_step() -> None:
        inputs, targets = batches[0]
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(inputs), targets).backward()
        optimizer.step()

    model.train()
    step_s = timed(sgd_step, args.rounds)
    optimizer.zero_grad(set_to_none=True)
    hvp = subset_hessian(model, loss_fn, batches, params, device)
    probe = [torch.randn(p.shape, generator=generator).to(device) for p in params]
    units = args.units
    work = {
        "hessian": ("Hessian-vector product over the subset", lambda: [hvp(probe) for _ in range(units)]),
        "esd": ("Lanczos step", lambda: spectral_density(hvp, params, iterations=units,
                                                         generator=torch.Generator().manual_seed(0))),
        "worst_case": ("m-APGD step over the subset", lambda: worst_case_sharpness(
            model, loss_fn, batches, 0.01, "linf", adaptive=True, steps=units)),
        "average": ("noise draw over the subset", lambda: average_sharpness(
            model, loss_fn, batches, 0.1, draws=units, adaptive=True, generator=torch.Generator().manual_seed(0))),
        "landscape": ("surface point over the subset", lambda: loss_surface(
            model, loss_fn, batches, [random_direction(model, torch.Generator().manual_seed(0))],
            torch.linspace(-1, 1, units))),
    }
    rows = []
    with measurement_mode(model):
        for measure, (unit, run) in work.items():
            per_unit = timed(run, args.rounds) / units
            rows.append({"measure": measure, "unit": unit, "seconds_per_unit": per_unit,
                         "sgd_steps_per_unit": per_unit / step_s})
            print(f"{measure:<11} {per_unit:8.3f} s per {unit}  = {per_unit / step_s:6.2f} SGD steps", flush=True)
    batches_per_subset = len(batches)
    print(f"SGD step on one batch of {args.batch}: {step_s:.3f} s; the subset is {batches_per_subset} batches "
          f"({args.samples} images); {args.model} on {args.device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, {date.today()}")
    if args.json:
        args.json.write_text(json.dumps({"sgd_step_s": step_s, "batches_per_subset": batches_per_subset,
                                         "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
