"""What flatmin's trainer costs beyond the training itself: its epoch against a minimal hand loop.

    python scripts/bench_overhead.py [--setups quickstart resnet18] [--optimizers sgd sam]
                                     [--rounds 7] [--resnet-images 320] [--resnet-batch 32] [--json out.json]
    python scripts/bench_overhead.py --startup [--rounds 7]

Per setup and optimizer, two contestants train one epoch of the same batches, each with the parts
``flatmin.assembly.assemble`` builds from the same config and seed (the same initial weights, the
optimizer from its YAML, the same per-step LR schedule):

* ``flatmin``: ``Trainer.train_epoch``, as ``python train.py`` runs it (the configured loader, the
  ``Stepper`` with its BN and gradient rules, the loss and accuracy accumulated on the device, the
  schedules, ``metrics.jsonl`` every ``trainer.log_every_n_steps`` steps, the stop checks);
* ``bare``: the minimal loop a researcher would write by hand: the split as tensors in memory,
  a random permutation sliced into batches, ``zero_grad``/forward/backward/``step`` (SAM: its
  ``step(closure)``), the LR scheduler stepped, the loss summed on the device.

Setups: ``quickstart`` is ``python train.py``'s own configuration (digits, the small CNN, batch 64,
16 steps an epoch); ``resnet18`` is ``dataset=cifar10 model=resnet18`` on ``--resnet-images``
random images written in CIFAR-10's format (no augmentation, no validation split, the tensor
loader), batch ``--resnet-batch``. The contestants run in interleaved rounds (one epoch of each per
round) after one untimed round; the figure is the median epoch time, with the ratio of flatmin's to
the bare loop's. Precision fp32, on the CPU unless ``--device``.

``--startup`` times whole processes instead, in interleaved rounds: ``python -c "import torch"``; a
minimal script that does what a one-epoch quick start needs (import torch and scikit-learn's digits,
split them, build SGD, train the same small CNN one epoch: ``MINIMAL_SCRIPT``); and ``python train.py
trainer.epochs=1`` (which also validates the config, evaluates, tests the best model, writes its run
directory). Medians of wall and CPU (user + system) seconds, as ratios to ``import torch``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig
from torch import Tensor, nn

from flatmin import rundir
from flatmin.assembly import assemble
from flatmin.data.cifar import write_cifar10
from flatmin.optim import MultiPassOptimizer
from flatmin.runtime import Runtime
from flatmin.train.loggers import JsonlLogger, Loggers
from flatmin.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]

#: What a one-epoch digits run needs at the least, without flatmin: the start-up floor of ``--startup``.
MINIMAL_SCRIPT = """
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

digits = load_digits()
x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16
y = torch.tensor(digits.target)
train, test = train_test_split(range(len(y)), test_size=0.2, stratify=digits.target, random_state=0)
train, val = train_test_split(train, test_size=0.25, stratify=digits.target[train], random_state=0)
blocks = lambda c_in, c_out: [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
model = nn.Sequential(*blocks(1, 32), nn.MaxPool2d(2), *blocks(32, 64), *blocks(64, 128),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
train = torch.tensor(train)
for batch in train[torch.randperm(len(train))].split(64)[:len(train) // 64]:
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
    optimizer.step()
with torch.no_grad():
    print((model.eval()(x[test]).argmax(1) == y[test]).float().mean().item())
"""


def setup_overrides(setup: str, args: argparse.Namespace, folder: Path) -> list[str]:
    """The config overrides of a setup (``resnet18``: random CIFAR-10-format data written to ``folder``)."""
    if setup == "quickstart":
        return []
    rng = np.random.default_rng(0)
    write_cifar10(folder, rng.integers(0, 256, (args.resnet_images, 3072), dtype=np.uint8),
                  rng.integers(0, 10, args.resnet_images), rng.integers(0, 256, (10, 3072), dtype=np.uint8),
                  rng.integers(0, 10, 10))
    return ["dataset=cifar10", "model=resnet18", f"paths.data_dir={folder}", "dataset.download=false",
            "dataset.augment.crop_flip=false", "dataset.split.val_fraction=0", "dataset.loader=gpu",
            f"dataset.batch_size={args.resnet_batch}"]


def compose_config(overrides: list[str]) -> DictConfig:
    with initialize_config_module("flatmin.conf", version_base="1.3"):
        return compose("config", overrides=overrides)


class Contestant:
    """One side of a comparison: its own parts (model, optimizer, schedule), and its epoch times."""

    def __init__(self, name: str, cfg: DictConfig, runtime: Runtime, run_dir: Path) -> None:
        self.name = name
        self.times: list[float] = []
        self.epoch = 0
        torch.manual_seed(cfg.seed)
        self.parts = assemble(cfg, runtime)
        if name == "flatmin":
            self.trainer = Trainer(self.parts, runtime, run_dir, Loggers([JsonlLogger(run_dir / rundir.METRICS)]))
        else:
            # The bare loop drives the optimizer itself, without the Stepper's gate between G and the base step,
            # and keeps the training split as two tensors, as a hand-written loop does.
            if isinstance(self.parts.optimizer, MultiPassOptimizer):
                self.parts.optimizer.base_step_gate = None
            inputs, targets = zip(*((x, y) for x, y in self.parts.loaders.train))
            self.inputs, self.targets = torch.cat(inputs), torch.cat(targets)
            self.batch_size, self.steps = len(targets[0]), len(targets)

    def run_epoch(self, timed: bool) -> None:
        start = time.perf_counter()
        if self.name == "flatmin":
            self.trainer.train_epoch(self.epoch)
        else:
            bare_epoch(self.parts.module, self.parts.optimizer, self.parts.lr_schedule, self.inputs, self.targets,
                       self.batch_size, self.steps)
        self.epoch += 1
        if timed:
            self.times.append(time.perf_counter() - start)


def bare_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, inputs: Tensor, targets: Tensor,
               batch_size: int, steps: int) -> float:
    """The hand-written loop: shuffle, slice, forward, backward, step; returns the mean loss."""
    model.train()
    order = torch.randperm(len(targets))
    total = torch.zeros(())
    for step in range(steps):
        index = order[step * batch_size:(step + 1) * batch_size]
        x, y = inputs[index], targets[index]

        def closure() -> Tensor:
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            return loss

        if getattr(optimizer, "passes_per_step", 1) > 1:
            loss = optimizer.step(closure)
        else:
            loss = closure()
            optimizer.step()
        scheduler.step()
        total += loss.detach()
    return total.item() / steps


def time_startup(rounds: int) -> None:
    """``--startup``: wall and CPU seconds of whole processes, in interleaved rounds (the first untimed)."""
    with tempfile.TemporaryDirectory() as folder:
        commands = {"import torch": [sys.executable, "-c", "import torch"],
                    "minimal one-epoch digits script": [sys.executable, "-c", MINIMAL_SCRIPT],
                    "python train.py trainer.epochs=1": [sys.executable, "train.py", "trainer.epochs=1",
                                                         f"hydra.run.dir={folder}/run" + "{round}"]}
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for round_index in range(rounds + 1):
            for name, command in commands.items():
                before, start = os.times(), time.perf_counter()
                subprocess.run([part.format(round=round_index) for part in command], cwd=ROOT, check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                wall, after = time.perf_counter() - start, os.times()
                cpu = after.children_user + after.children_system - before.children_user - before.children_system
                if round_index > 0:
                    times[name].append((wall, cpu))
    print(f"{date.today()}, {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}; median of "
          f"{rounds} interleaved rounds after 1 untimed round\n")
    print("| process | wall (s) | CPU (s) | wall / import torch |")
    print("|---|---|---|---|")
    base = statistics.median(wall for wall, _ in times["import torch"])
    for name, pairs in times.items():
        wall, cpu = statistics.median(w for w, _ in pairs), statistics.median(c for _, c in pairs)
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {wall / base:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setups", nargs="+", default=["quickstart", "resnet18"], choices=["quickstart", "resnet18"])
    parser.add_argument("--optimizers", nargs="+", default=["sgd", "sam"])
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds, one epoch of each contestant")
    parser.add_argument("--resnet-images", type=int, default=320, help="training images of the resnet18 setup")
    parser.add_argument("--resnet-batch", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--startup", action="store_true", help="time whole processes' start-up instead")
    args = parser.parse_args()
    if args.startup:
        time_startup(args.rounds)
        return
    runtime = Runtime.local(args.device, "fp32")
    rows = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        for setup in args.setups:
            for optimizer in args.optimizers:
                run_dir = Path(folder) / f"{setup}-{optimizer}"
                run_dir.mkdir()
                cfg = compose_config([*setup_overrides(setup, args, Path(folder) / "data"), f"optimizer={optimizer}",
                                      f"paths.output_dir={run_dir}", "trainer.progress_bar=false"])
                contestants = [Contestant(name, cfg, runtime, run_dir) for name in ("flatmin", "bare")]
                for round_index in range(args.rounds + 1):           # the first round is untimed
                    for contestant in contestants:
                        contestant.run_epoch(timed=round_index > 0)
                flatmin, bare = (statistics.median(c.times) for c in contestants)
                steps = contestants[1].steps
                rows.append({"setup": setup, "optimizer": optimizer, "steps_per_epoch": steps,
                             "flatmin_epoch_s": flatmin, "bare_epoch_s": bare, "ratio": flatmin / bare,
                             "flatmin_spread_s": [min(contestants[0].times), max(contestants[0].times)],
                             "bare_spread_s": [min(contestants[1].times), max(contestants[1].times)]})
    print(f"{date.today()}, {platform.machine()} {args.device}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}, fp32; median of {args.rounds} interleaved rounds after 1 untimed round "
          f"({(time.perf_counter() - started) / 60:.1f} minutes)\n")
    print("| setup | optimizer | steps/epoch | flatmin epoch (s) | bare loop epoch (s) | ratio |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['setup']} | {row['optimizer']} | {row['steps_per_epoch']} | {row['flatmin_epoch_s']:.4f} | "
              f"{row['bare_epoch_s']:.4f} | {row['ratio']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
