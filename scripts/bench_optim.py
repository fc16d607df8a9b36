"""Time one optimizer step of every method as a ratio to SGD, measured in the same run.

    python scripts/bench_optim.py [--device cpu|cuda] [--models small_cnn resnet18] [--steps 10]

Each method is built by ``build_optimizer`` and driven by the trainer's own ``Stepper`` on a fixed
synthetic batch, so the timing includes everything a real step does (closure, BN rule, perturb,
restore). Reported per model and method: passes per step, ms per step (median of ``--steps``
after ``--warmup``, device synchronised), the ratio to SGD, and the extra optimizer memory in
parameter-sized buffers (the method's scratch and own state; the base optimizer's momentum or
Adam moments are not counted, SGD's are the baseline).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import date
from typing import Callable

import torch
import torchvision
from omegaconf import OmegaConf
from torch import nn

from flatmin.models import SmallCNN
from flatmin.optim import METHODS, MultiPassOptimizer, build_optimizer
from flatmin.train.precision import LossScaler, autocast, resolve_device, resolve_precision
from flatmin.train.step import Stepper

OPTIMIZER_CONFIG = {"lr": 0.05, "momentum": 0.9, "nesterov": False, "weight_decay": 5e-4, "betas": [0.9, 0.999],
                    "eps": 1e-8, "amsgrad": False, "decay_norm_and_bias": True, "base": "sgd",
                    "rho": 0.05, "adaptive": False, "eta": 0.01}


def resnet18_imagenet_stem() -> nn.Module:
    """torchvision's ResNet-18 (ImageNet stem) with a 10-class head, at 32x32 input."""
    return torchvision.models.resnet18(num_classes=10)


MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], int]] = {
    # name: (constructor, input shape without batch, batch size)
    "small_cnn": (lambda: SmallCNN(num_classes=10, in_channels=1), (1, 8, 8), 64),
    "resnet18": (resnet18_imagenet_stem, (3, 32, 32), 128),
}


def extra_buffers(optimizer: torch.optim.Optimizer, model: nn.Module) -> float:
    """The method's own memory (scratch + state) in units of the model's parameter count."""
    if not isinstance(optimizer, MultiPassOptimizer):
        return 0.0
    tensors = list(optimizer._scratch.values())
    tensors += [t for state in optimizer.state.values() for t in state.values() if isinstance(t, torch.Tensor)]
    return sum(t.numel() for t in tensors) / sum(p.numel() for p in model.parameters())


def time_method(name: str, model_name: str, device: torch.device, precision: str, steps: int,
                warmup: int) -> dict[str, float]:
    build, shape, batch = MODELS[model_name]
    torch.manual_seed(0)
    model = build().to(device)
    inputs = torch.randn(batch, *shape, device=device)
    targets = torch.randint(0, 10, (batch,), device=device)
    optimizer = build_optimizer(OmegaConf.create({"name": name, **OPTIMIZER_CONFIG}), model)
    stepper = Stepper(model, optimizer, nn.CrossEntropyLoss(), lambda: autocast(device, precision),
                      LossScaler(device, precision == "fp16"))
    times = []
    for index in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        stepper.step(inputs, targets)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if index >= warmup:
            times.append(time.perf_counter() - start)
    return {"passes_per_step": stepper.passes / stepper.micro_steps, "ms_per_step": 1e3 * statistics.median(times),
            "extra_buffers": extra_buffers(optimizer, model)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--methods", nargs="+", default=["sgd", "adam", *METHODS])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(f"# optimizer step benchmark, {date.today()}, {machine}, torch {torch.__version__}, {precision}\n")
    print("| model | method | passes/step | ms/step | time ratio to SGD | extra buffers |")
    print("|---|---|---|---|---|---|")
    results = []
    methods = ["sgd", *(m for m in args.methods if m != "sgd")]     # SGD first: it is the baseline
    for model_name in args.models:
        baseline = None
        for method in methods:
            row = time_method(method, model_name, device, precision, args.steps, args.warmup)
            baseline = baseline or row["ms_per_step"]
            row.update(model=model_name, method=method, ratio=row["ms_per_step"] / baseline)
            results.append(row)
            print(f"| {model_name} | {method} | {row['passes_per_step']:.0f} | {row['ms_per_step']:.1f} | "
                  f"{row['ratio']:.2f} | {row['extra_buffers']:.2f} |", flush=True)
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"date": str(date.today()), "machine": machine, "precision": precision, "results": results},
                      file, indent=2)


if __name__ == "__main__":
    main()
