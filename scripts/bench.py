"""Training throughput: does the data path keep the device busy, and what does each method cost?

    python scripts/bench.py [--device cuda] [--model resnet18] [--optimizers sgd sam]
                            [--precisions bf16] [--loaders gpu torch] [--json bench.json]

For one model on CIFAR-10-shaped data it measures, after warm-up and with the device synchronised:

* the data path alone, per loader (``gpu``: the device-resident loader; ``torch``: DataLoader
  workers with torchvision transforms), in samples/s;
* one training step per optimizer and precision on a fixed batch already on the device
  ("synthetic", the ceiling), and fed by each loader, in ms/step and samples/s, with the ratio to
  the synthetic ceiling (the share of throughput the data path leaves) and to SGD's throughput in
  the same configuration.

The data is the real CIFAR-10 under ``--data-dir`` when it is there, otherwise random images
written in CIFAR-10's own format to a temporary folder, so the real reader and transforms run
either way. Steps go through the trainer's own ``Stepper`` (the multi-pass contract, BN rule, AMP).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from torch import nn

from flatmin.data import build_dataset, make_loaders
from flatmin.data.cifar import write_cifar10
from flatmin.models import build_model
from flatmin.optim import build_optimizer
from flatmin.train.precision import LossScaler, autocast, resolve_device, resolve_precision
from flatmin.train.step import Stepper

CONF = Path(__file__).resolve().parents[1] / "conf"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def config(args: argparse.Namespace, data_dir: Path, loader: str, optimizer: str = "sgd") -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
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


def on_device(batch: tuple[torch.Tensor, torch.Tensor], device: torch.device,
              channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """What the trainer does to every batch before the step."""
    inputs, targets = batch
    inputs = inputs.to(device, non_blocking=True)
    if channels_last:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    return inputs, targets.to(device, non_blocking=True)


def timed(steps: int, warmup: int, device: torch.device, work: Any) -> float:
    """Seconds per call of ``work()``, over ``steps`` calls after ``warmup``, device synchronised."""
    for _ in range(warmup):
        work()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        work()
    synchronize(device)
    return (time.perf_counter() - start) / steps


def data_path_rate(args: argparse.Namespace, cfg: DictConfig, device: torch.device) -> float:
    """Samples/s of the loader alone (batches moved to the device)."""
    loaders = make_loaders(build_dataset(cfg.dataset), cfg.dataset, device, seed=0)
    batches = endless(loaders.train)
    seconds = timed(args.steps, args.warmup, device,
                    lambda: on_device(next(batches), device, args.channels_last)[0].sum())
    return args.batch_size / seconds


def step_rate(args: argparse.Namespace, cfg: DictConfig, device: torch.device, precision: str,
              loader: str) -> float:
    """Seconds per training step fed by ``loader`` (or by one fixed on-device batch: ``synthetic``)."""
    torch.manual_seed(0)
    model = build_model(cfg.model).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg.optimizer, model)
    stepper = Stepper(model, optimizer, nn.CrossEntropyLoss(), lambda: autocast(device, precision),
                      LossScaler(device, precision == "fp16"))
    if loader == "synthetic":
        fixed = on_device((torch.randn(args.batch_size, 3, 32, 32), torch.randint(0, 10, (args.batch_size,))),
                          device, args.channels_last)
        batches: Iterator = itertools.repeat(fixed)
    else:
        loaders = make_loaders(build_dataset(cfg.dataset), cfg.dataset, device, seed=0)
        batches = (on_device(batch, device, args.channels_last) for batch in endless(loaders.train))
    return timed(args.steps, args.warmup, device, lambda: stepper.step(*next(batches)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", default="resnet18", help="a conf/model option")
    parser.add_argument("--optimizers", nargs="+", default=["sgd", "sam"])
    parser.add_argument("--precisions", nargs="+", default=["auto"])
    parser.add_argument("--loaders", nargs="+", default=None, help="gpu and/or torch (default: both on CUDA, "
                                                                    "torch on the CPU)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="DataLoader workers of the torch loader (default: up to 4)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                        help="default: on for CUDA")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 20 on CUDA, 5 on the CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps (default: 5 on CUDA, 2 on the CPU)")
    parser.add_argument("--train-images", type=int, default=None,
                        help="size of the synthetic training split (default: 50,000 on CUDA, 5,000 on the CPU)")
    parser.add_argument("--data-dir", help="a folder holding cifar-10-batches-py/ (else synthetic data)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.backends.cudnn.benchmark = True       # as the trainer sets it (flatmin/train/seeding.py)
    on_gpu = device.type == "cuda"
    args.channels_last = on_gpu if args.channels_last is None else args.channels_last
    args.steps = args.steps or (20 if on_gpu else 5)
    args.warmup = args.warmup or (5 if on_gpu else 2)
    args.train_images = args.train_images or (50_000 if on_gpu else 5_000)
    loaders = args.loaders or (["gpu", "torch"] if device.type == "cuda" else ["torch"])
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"
    print(f"# training throughput, {date.today()}, {machine}, torch {torch.__version__}, model {args.model}, "
          f"batch {args.batch_size}, channels_last {args.channels_last}\n")
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        data_dir = cifar_like_data(args, Path(folder))
        print("| data path | samples/s |\n|---|---|")
        for loader in loaders:
            rate = data_path_rate(args, config(args, data_dir, loader), device)
            results.append({"kind": "data", "loader": loader, "samples_per_s": rate})
            print(f"| {loader} | {rate:.0f} |", flush=True)
        print("\n| precision | optimizer | fed by | ms/step | samples/s | × synthetic | × SGD |\n"
              "|---|---|---|---|---|---|---|")
        for requested in args.precisions:
            precision = resolve_precision(requested, device)
            synthetic: dict[str, float] = {}
            sgd: dict[str, float] = {}
            for optimizer in ["sgd", *(o for o in args.optimizers if o != "sgd")]:
                for loader in ["synthetic", *loaders]:
                    seconds = step_rate(args, config(args, data_dir, "torch" if loader == "synthetic" else loader,
                                                     optimizer), device, precision, loader)
                    rate = args.batch_size / seconds
                    synthetic.setdefault(optimizer, rate)
                    sgd.setdefault(loader, rate)
                    row = {"kind": "step", "precision": precision, "optimizer": optimizer, "loader": loader,
                           "ms_per_step": 1e3 * seconds, "samples_per_s": rate,
                           "of_synthetic": rate / synthetic[optimizer], "of_sgd": rate / sgd[loader]}
                    results.append(row)
                    print(f"| {precision} | {optimizer} | {loader} | {row['ms_per_step']:.1f} | {rate:.0f} | "
                          f"{row['of_synthetic']:.2f} | {row['of_sgd']:.2f} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"date": str(date.today()), "machine": machine, "model": args.model,
                                               "batch_size": args.batch_size, "results": results}, indent=2))


if __name__ == "__main__":
    main()
