"""Time one optimizer step of every method as a ratio to SGD, measured in the same run.

    python scripts/bench_optim.py [--device cpu|cuda] [--models resnet18 bert] [--methods sgd sam ...]
                                  [--steps N] [--warmup N]

Each method is built by ``build_optimizer`` from its own ``conf/optimizer/<name>.yaml`` (the papers'
defaults) and driven by the trainer's own ``Stepper`` on a fixed synthetic batch, so the timing
includes everything a real step does (closure, BN rule, perturb, restore, base step). The methods
are timed in interleaved rounds (one step of each, ``--warmup + --steps`` times), so a change in the
machine's load during the run touches every method alike. Reported per model and method: passes per
step, ms per step (median of the ``--steps`` timed rounds, device synchronised), the ratio to SGD,
the extra optimizer memory counted in parameter-sized buffers (the method's scratch and own state;
the base optimizer's momentum or Adam moments are not counted, SGD's are the baseline) and, on
CUDA, the measured peak memory of a step above SGD's in the same units (everything: gradients, the
base optimizer's state, the method's buffers and its transient tensors; see ``StepMemory``). The
models: flatmin's ResNet-18 with the CIFAR stem (``model=resnet18``) on 32x32 images, batch 128; a
BERT-style encoder (4 layers, hidden 256, random init) on 128 tokens, batch 32. On a CPU the defaults
take 5 timed rounds after 1 warm-up round (about 8 minutes). When pytorch_optimizer is importable,
its SAM runs beside flatmin's with the same settings (``sam[pytorch_optimizer]``: its own closure
and step, no trainer rules; its buffers are not counted).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import platform
import statistics
import time
from datetime import date
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from flatmin.models import CifarResNet, SmallCNN
from flatmin.optim import MultiPassOptimizer, build_optimizer
from flatmin.optim.registry import option_config
from flatmin.train.precision import resolve_device, resolve_precision
from flatmin.train.runtime import Runtime
from flatmin.train.step import Stepper

CONF = Path(__file__).resolve().parents[1] / "conf" / "optimizer"
#: Weight averaging over a method, named ``<option>+<averaging.kind>``.
AVERAGED = ["sam+ema", "sgd+swa"]
#: Every config option but AdamW (the same step cost as Adam): SGD first, the baseline; then the averages.
METHODS = ["sgd", *sorted(path.stem for path in CONF.glob("*.yaml") if path.stem not in ("sgd", "adamw")), *AVERAGED]
BERT_VOCAB, BERT_TOKENS = 30522, 128


class BertLogits(nn.Module):
    """A randomly initialised BERT-style encoder with a 2-class head; token ids in, logits out."""

    def __init__(self) -> None:
        super().__init__()
        from transformers import BertConfig, BertForSequenceClassification

        config = BertConfig(vocab_size=BERT_VOCAB, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                            intermediate_size=1024, max_position_embeddings=BERT_TOKENS, num_labels=2)
        self.bert = BertForSequenceClassification(config)

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.bert(input_ids=input_ids).logits


def images(shape: tuple[int, ...], classes: int) -> Callable[[int, torch.device], tuple[Tensor, Tensor]]:
    return lambda batch, device: (torch.randn(batch, *shape, device=device),
                                  torch.randint(0, classes, (batch,), device=device))


def tokens(batch: int, device: torch.device) -> tuple[Tensor, Tensor]:
    return (torch.randint(0, BERT_VOCAB, (batch, BERT_TOKENS), device=device),
            torch.randint(0, 2, (batch,), device=device))


MODELS: dict[str, tuple[Callable[[], nn.Module], Callable[[int, torch.device], tuple[Tensor, Tensor]], int]] = {
    # name: (constructor, batch maker, batch size)
    "small_cnn": (lambda: SmallCNN(num_classes=10, in_channels=1), images((1, 8, 8), 10), 64),
    "resnet18": (lambda: CifarResNet(depth=18, num_classes=10), images((3, 32, 32), 10), 128),
    "bert": (BertLogits, tokens, 32),
}


def extra_buffers(optimizer: torch.optim.Optimizer, model: nn.Module) -> float:
    """The method's own memory (scratch + state) in units of the model's parameter count."""
    tensors = []
    while isinstance(optimizer, MultiPassOptimizer):        # a wrapper (averaging, Lookahead), then what it wraps
        tensors += list(optimizer._scratch.values())
        tensors += [t for state in optimizer.state.values() for t in state.values() if isinstance(t, torch.Tensor)]
        optimizer = optimizer.base_optimizer
    return sum(t.numel() for t in tensors) / sum(p.numel() for p in model.parameters())


class Contestant:
    """One method on its own copy of the model, with the trainer's ``Stepper`` and a fixed batch."""

    def __init__(self, method: str, model_name: str, device: torch.device, precision: str) -> None:
        build, make_batch, batch = MODELS[model_name]
        torch.manual_seed(0)
        self.device = device
        self.model = build().to(device)
        self.inputs, self.targets = make_batch(batch, device)
        self.optimizer = self.build_optimizer(method)
        runtime = Runtime(device, precision)
        self.stepper = Stepper(self.model, self.optimizer, nn.functional.cross_entropy, runtime.autocast,
                               runtime.loss_scaler())
        self.times: list[float] = []
        self.timed_passes = 0
        self.memory = StepMemory()

    def build_optimizer(self, method: str) -> torch.optim.Optimizer:
        option, _, averaging = method.partition("+")
        cfg = option_config(option)
        if averaging:
            cfg.averaging.kind = averaging
        return build_optimizer(cfg, self.model)

    def drive(self) -> None:
        self.stepper.step(self.inputs, self.targets)

    def step(self, timed: bool) -> None:
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            before = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        passes, start = self.stepper.passes, time.perf_counter()
        self.drive()
        if cuda:
            torch.cuda.synchronize(self.device)
        if timed:
            self.times.append(time.perf_counter() - start)
            self.timed_passes += self.stepper.passes - passes
        if cuda:
            self.memory.track(before, torch.cuda.memory_allocated(self.device),
                              torch.cuda.max_memory_allocated(self.device), timed)

    def result(self) -> dict[str, float]:
        return {"passes_per_step": self.timed_passes / len(self.times),     # of the timed steps (Fisher-mask SAM's
                                                                          # mask steps come every mask_every)
                "ms_per_step": 1e3 * statistics.median(self.times),
                "extra_buffers": extra_buffers(self.optimizer, self.model),
                "peak_mib": self.memory.peak() / 2**20 if self.device.type == "cuda" else float("nan"),
                "param_mib": sum(p.numel() * p.element_size() for p in self.model.parameters()) / 2**20}


class StepMemory:
    """A contestant's device memory above its weights and batch, from its own steps alone (the
    other contestants' memory does not change while it steps): what its first step left allocated
    (gradients, optimizer state, the method's buffers) plus the largest transient peak of a timed
    step (the warm-up's hold cuDNN's autotuning workspaces)."""

    def __init__(self) -> None:
        self.kept: int | None = None
        self.transient = 0

    def track(self, before: int, after: int, peak: int, timed: bool) -> None:
        if self.kept is None:
            self.kept = after - before
        if timed:
            self.transient = max(self.transient, peak - before)

    def peak(self) -> int:
        return (self.kept or 0) + self.transient


class PeerSAM(Contestant):
    """pytorch_optimizer's SAM with flatmin's SAM settings (``conf/optimizer/sam.yaml``), on the same
    model and batch, driven as its documentation shows: ``closure(); optimizer.step(closure)``."""

    NAME = "sam[pytorch_optimizer]"

    def build_optimizer(self, method: str) -> torch.optim.Optimizer:
        from pytorch_optimizer import SAM as PytorchOptimizerSAM

        cfg = option_config("sam")
        return PytorchOptimizerSAM(self.model.parameters(), torch.optim.SGD, rho=cfg.rho, lr=cfg.lr,
                                   momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)

    def drive(self) -> None:
        def closure() -> Tensor:
            self.optimizer.zero_grad()
            with self.stepper.autocast():
                loss = self.stepper.loss_fn(self.model(self.inputs), self.targets)
            loss.backward()
            return loss

        closure()
        self.optimizer.step(closure)
        self.stepper.passes += 2
        self.stepper.micro_steps += 1

    def result(self) -> dict[str, float]:
        return {**super().result(), "extra_buffers": float("nan")}


def peer_available() -> bool:
    """Whether pytorch_optimizer (the largest peer library) is importable, for ``PeerSAM``."""
    return importlib.util.find_spec("pytorch_optimizer") is not None


def time_methods(methods: list[str], model_name: str, device: torch.device, precision: str, steps: int,
                 warmup: int) -> dict[str, dict[str, float]]:
    """Per method, its passes, median ms per step and extra buffers, from interleaved rounds."""
    # Process-wide allocations made on first use (cuBLAS's workspace) must not count as the first
    # contestant's memory: a throwaway step takes them first.
    Contestant("sgd", model_name, device, precision).step(timed=False)
    contestants = {method: (PeerSAM if method == PeerSAM.NAME else Contestant)(method, model_name, device, precision)
                   for method in methods}
    for round_index in range(warmup + steps):
        for contestant in contestants.values():
            contestant.step(timed=round_index >= warmup)
    return {method: contestant.result() for method, contestant in contestants.items()}


def measured(value: float) -> str:
    """A figure to two decimals, or "n/a" where it was not measured (NaN)."""
    return "n/a" if math.isnan(value) else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--models", nargs="+", default=["resnet18", "bert"], choices=list(MODELS))
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--steps", type=int,
                        help="timed rounds, one step of each method (default: 30 on CUDA, 5 on a CPU)")
    parser.add_argument("--warmup", type=int, help="untimed rounds first (default: 5 on CUDA, 1 on a CPU)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.backends.cudnn.benchmark = True       # as the trainer sets it (flatmin/train/seeding.py)
    precision = resolve_precision(args.precision, device)
    cuda = device.type == "cuda"
    steps = args.steps or (30 if cuda else 5)
    warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
    machine = torch.cuda.get_device_name(device) if cuda else \
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(f"# optimizer step benchmark, {date.today()}, {machine}, torch {torch.__version__}, {precision}, "
          f"median of {steps} interleaved rounds after {warmup} warm-up\n")
    print("| model | method | passes/step | ms/step | time ratio to SGD | extra buffers | peak memory above SGD |")
    print("|---|---|---|---|---|---|---|")
    results = []
    methods = ["sgd", *(m for m in args.methods if m != "sgd")]     # SGD is always there: the baseline
    if "sam" in methods and peer_available():
        methods.append(PeerSAM.NAME)
    for model_name in args.models:
        rows = time_methods(methods, model_name, device, precision, steps, warmup)
        for method, row in rows.items():
            row.update(model=model_name, method=method, ratio=row["ms_per_step"] / rows["sgd"]["ms_per_step"],
                       peak_above_sgd=(row["peak_mib"] - rows["sgd"]["peak_mib"]) / row["param_mib"])
            results.append(row)
            print(f"| {model_name} | {method} | {row['passes_per_step']:.3g} | {row['ms_per_step']:.1f} | "
                  f"{row['ratio']:.2f} | {measured(row['extra_buffers'])} | {measured(row['peak_above_sgd'])} |",
                  flush=True)
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"date": str(date.today()), "machine": machine, "precision": precision, "results": results},
                      file, indent=2)


if __name__ == "__main__":
    main()
