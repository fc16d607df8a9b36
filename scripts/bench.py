"""Training throughput: does the data path keep the device busy, and what does each method cost?

    python scripts/bench.py [--device cuda] [--model resnet18] [--optimizers sgd sam]
                            [--precisions bf16] [--loaders gpu torch] [--rounds 5] [--json bench.json]

For one model on CIFAR-10-shaped data it measures, with the device synchronised:

* the data path alone, per loader (``gpu``: the device-resident loader; ``torch``: DataLoader
  workers with torchvision transforms), in samples/s;
* one training step per optimizer and precision on a fixed batch already on the device
  ("synthetic", the ceiling), and fed by each loader, in ms/step and samples/s, with the ratio to
  the synthetic ceiling (the share of throughput the data path leaves) and to SGD's throughput in
  the same configuration.

Every configuration keeps its own model and loader, and they are timed in interleaved rounds (each
round runs each configuration for ``--steps`` steps, after ``--warmup`` untimed ones), after one
untimed round; the figure is the median over the rounds, with the slowest and fastest round beside
it. cuDNN autotunes, as in the trainer. The data is the real CIFAR-10 under ``--data-dir`` when it
is there, otherwise random images written in CIFAR-10's own format to a temporary folder, so the
real reader and transforms run either way. Each configuration is assembled by
``flatmin.assembly.assemble`` as a run would be, and steps through its ``Stepper`` (the multi-pass
contract, BN rule, AMP).
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from flatmin.assembly import assemble
from flatmin.data import resolve_num_workers
from flatmin.data.cifar import write_cifar10
from flatmin.runtime import Runtime


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def config(args: argparse.Namespace, data_dir: Path, loader: str, optimizer: str = "sgd") -> DictConfig:
    with initialize_config_module("flatmin.conf", version_base="1.3"):
        return compose("config", overrides=[
            "dataset=cifar10", f"model={args.model}", f"optimizer={optimizer}", f"paths.data_dir={data_dir}",
            "paths.output_dir=unused", "dataset.download=false", f"dataset.loader={loader}",
            f"dataset.batch_size={args.batch_size}", f"dataset.num_workers={args.workers}"])


def cifar_like_data(args: argparse.Namespace, folder: Path) -> Path:
    """The real CIFAR-10 under ``--data-dir`` if present, else random images in its format."""
    if args.data_dir and (Path(args.data_dir) / "cifar-10-batches-py").is_dir():
        return Path(args.data_dir)
    rng = np.random.default_rng(0)
    write_cifar10(folder, rng.integers(0, 256, (args.train_images, 3072), dtype=np.uint8),
                  rng.integers(0, 10, args.train_images), rng.integers(0, 256, (100, 3072), dtype=np.uint8),
                  rng.integers(0, 10, 100))
    return folder


def endless(loader: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches from ``loader``, epoch after epoch."""
    for epoch in itertools.count():
        loader.sampler.set_epoch(epoch)
        yield from loader


#: Batches a DataLoader holds ready per worker (torch's default ``prefetch_factor``).
PREFETCH_PER_WORKER = 2


class Configuration:
    """One measured configuration: a loader alone, or a training step fed by a loader or by one
    fixed on-device batch ("synthetic"), with its own assembled parts and batch iterator."""

    def __init__(self, args: argparse.Namespace, data_dir: Path, runtime: Runtime, loader: str,
                 optimizer: str | None = None) -> None:
        self.loader, self.optimizer = loader, optimizer
        self.precision = runtime.precision.name
        self.device = runtime.device
        self.batch_size = args.batch_size
        torch.manual_seed(0)
        parts = assemble(config(args, data_dir, "torch" if loader == "synthetic" else loader, optimizer or "sgd"),
                         runtime)

        def on_device(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            return runtime.to_device(batch[0]), batch[1].to(self.device, non_blocking=True)   # as the trainer does

        if loader == "synthetic":
            fixed = on_device((torch.randn(args.batch_size, 3, 32, 32), torch.randint(0, 10, (args.batch_size,))))
            self.batches: Iterator = itertools.repeat(fixed)
        else:
            self.batches = (on_device(batch) for batch in endless(parts.loaders.train))
        # A DataLoader's workers fill its queue while the other configurations run: each round first
        # drains twice that queue, so the timed steps see the loader's steady rate, not its backlog.
        self.drain = 2 * PREFETCH_PER_WORKER * args.workers if loader == "torch" else 0
        self.stepper = parts.stepper if optimizer is not None else None
        self.rates: list[float] = []

    def work(self) -> None:
        batch = next(self.batches)
        if self.stepper is None:
            batch[0].sum()              # the batch must have arrived on the device
        else:
            self.stepper.step(*batch)

    def run_round(self, steps: int, warmup: int, timed: bool) -> None:
        """``warmup`` (+ the drain) untimed calls, then ``steps`` timed ones; records samples/s."""
        for _ in range(warmup + self.drain):
            self.work()
        synchronize(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            self.work()
        synchronize(self.device)
        if timed:
            self.rates.append(steps * self.batch_size / (time.perf_counter() - start))

    def result(self) -> dict[str, Any]:
        """Median samples/s over the rounds, with the slowest and fastest round."""
        median = statistics.median(self.rates)
        row = {"kind": "data" if self.stepper is None else "step", "loader": self.loader, "samples_per_s": median,
               "min_samples_per_s": min(self.rates), "max_samples_per_s": max(self.rates), "rounds": len(self.rates)}
        if self.stepper is not None:
            row.update(precision=self.precision, optimizer=self.optimizer, ms_per_step=1e3 * self.batch_size / median)
        return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", default="resnet18", help="a flatmin/conf/model option")
    parser.add_argument("--optimizers", nargs="+", default=["sgd", "sam"])
    parser.add_argument("--precisions", nargs="+", default=["auto"])
    parser.add_argument("--loaders", nargs="+", default=None, help="gpu and/or torch (default: both on CUDA, "
                                                                    "torch on the CPU)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=resolve_num_workers("auto"),
                        help="DataLoader workers of the torch loader (default: dataset.num_workers=auto, this "
                             "process's CPUs)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                        help="default: on for CUDA")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default: 5 on CUDA, 3 on the CPU)")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per configuration and round (default: 20 on CUDA, 3 on the CPU)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed steps per configuration and round (default: 3 on CUDA, 1 on the CPU); "
                             "a warm-up round comes first")
    parser.add_argument("--train-images", type=int, default=None,
                        help="size of the synthetic training split (default: 50,000 on CUDA, 5,000 on the CPU)")
    parser.add_argument("--data-dir", help="a folder holding cifar-10-batches-py/ (else synthetic data)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    device = Runtime.local(args.device).device
    torch.backends.cudnn.benchmark = True       # as the trainer sets it (flatmin/train/seeding.py)
    on_gpu = device.type == "cuda"
    args.channels_last = on_gpu if args.channels_last is None else args.channels_last
    args.rounds = args.rounds or (5 if on_gpu else 3)
    args.steps = args.steps or (20 if on_gpu else 3)
    args.warmup = args.warmup if args.warmup is not None else (3 if on_gpu else 1)
    args.train_images = args.train_images or (50_000 if on_gpu else 5_000)
    loaders = args.loaders or (["gpu", "torch"] if on_gpu else ["torch"])
    machine = torch.cuda.get_device_name(device) if on_gpu else \
        f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"
    print(f"# training throughput, {date.today()}, {machine}, torch {torch.__version__}, model {args.model}, "
          f"batch {args.batch_size}, channels_last {args.channels_last}, {args.workers} DataLoader workers; "
          f"median of {args.rounds} interleaved rounds of {args.steps} steps [slowest, fastest round]\n")
    with tempfile.TemporaryDirectory() as folder:
        data_dir = cifar_like_data(args, Path(folder))
        data_only = Runtime.local(args.device, "fp32", channels_last=args.channels_last)
        configurations = [Configuration(args, data_dir, data_only, loader) for loader in loaders]
        for precision in dict.fromkeys(Runtime.local(args.device, name).precision.name for name in args.precisions):
            runtime = Runtime.local(args.device, precision, channels_last=args.channels_last)
            for optimizer in ["sgd", *(o for o in args.optimizers if o != "sgd")]:
                configurations += [Configuration(args, data_dir, runtime, loader, optimizer)
                                   for loader in ["synthetic", *loaders]]
        # Interleaved: each round runs every configuration once, so a change in the machine's load or
        # clocks during the run touches all of them alike.
        for round_index in range(args.rounds + 1):
            for configuration in configurations:
                configuration.run_round(args.steps, args.warmup, timed=round_index > 0)
        results = [configuration.result() for configuration in configurations]
    print("| data path | samples/s [slowest, fastest] |\n|---|---|")
    for row in (row for row in results if row["kind"] == "data"):
        print(f"| {row['loader']} | {row['samples_per_s']:.0f} [{row['min_samples_per_s']:.0f}, "
              f"{row['max_samples_per_s']:.0f}] |")
    print("\n| precision | optimizer | fed by | ms/step | samples/s [slowest, fastest] | × synthetic | × SGD |\n"
          "|---|---|---|---|---|---|---|")
    steps = [row for row in results if row["kind"] == "step"]
    for row in steps:
        synthetic = next(r for r in steps if (r["precision"], r["optimizer"], r["loader"]) ==
                         (row["precision"], row["optimizer"], "synthetic"))
        sgd = next(r for r in steps if (r["precision"], r["optimizer"], r["loader"]) ==
                   (row["precision"], "sgd", row["loader"]))
        row.update(of_synthetic=row["samples_per_s"] / synthetic["samples_per_s"],
                   of_sgd=row["samples_per_s"] / sgd["samples_per_s"])
        print(f"| {row['precision']} | {row['optimizer']} | {row['loader']} | {row['ms_per_step']:.1f} | "
              f"{row['samples_per_s']:.0f} [{row['min_samples_per_s']:.0f}, {row['max_samples_per_s']:.0f}] | "
              f"{row['of_synthetic']:.2f} | {row['of_sgd']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"date": str(date.today()), "machine": machine, "model": args.model,
                                               "batch_size": args.batch_size, "results": results}, indent=2))


if __name__ == "__main__":
    main()
