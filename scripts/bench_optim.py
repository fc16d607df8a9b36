"""Time one optimizer step of every method as a ratio to SGD, measured in the same run.

    python scripts/bench_optim.py [--device cpu|cuda] [--models resnet18 bert] [--methods sgd sam ...]
                                  [--steps N] [--warmup N] [--threads N] [--optimizer-only]

Each method is built from its own ``flatmin/conf/optimizer/<name>.yaml`` (the papers' defaults) by
``flatmin.assembly.assemble_stepper`` and driven by its ``Stepper`` on a fixed synthetic batch, so the
timing includes everything a real step does (closure, BN rule, perturb, restore, base step). The methods
are timed in interleaved rounds (one step of each, ``--warmup + --steps`` times), so a change in the
machine's load during the run touches every method alike. Reported per model and method: passes per
step, ms per step (median of the ``--steps`` timed rounds, device synchronised), the ratio to SGD,
the extra optimizer memory counted in parameter-sized buffers (the method's scratch and own state;
the base optimizer's momentum or Adam moments are not counted, SGD's are the baseline) and the
measured peak memory of a step above SGD's in the same units (everything: gradients, the base
optimizer's state, the method's buffers and its transient tensors; see ``StepMemory``): on CUDA
from the allocator's counters, on a CPU from ``torch.profiler``'s allocation events
(``profiled_memory``) of one extra step before the rounds and one after. The models: flatmin's
ResNet-18 with the CIFAR stem (``model=resnet18``) on 32x32 images, batch 128; a BERT-style encoder
(4 layers, hidden 256, random init) on 128 tokens, batch 32. On a CPU the defaults take 5 timed
rounds after 1 warm-up round (about 8 minutes). When pytorch_optimizer is importable, its SAM runs
beside flatmin's with the same settings (``sam[pytorch_optimizer]``: its own closure and step, no
trainer rules; its buffers are not counted).

``--optimizer-only`` times the optimizer's own work: no forward or backward, a closure that copies
fixed random gradients into ``.grad`` (``GradientReplay``; it speaks the extended protocol with
made-up losses) and times itself, so that a step's time less its closure calls' is what is reported
(median ms of the timed rounds), beside the passes (closure calls), the extra buffers and the peak
memory above SGD's as above. ResNet-18's parameters by default, and the methods SGD, those
pytorch_optimizer also has and those issue 13 timed; each method with a pytorch_optimizer peer
(SAM, ASAM as its ``SAM(adaptive=True)``, GSAM, WSAM, bSAM, FriendlySAM, LookSAM) runs beside it
with its YAML's settings, driven as the peer's documentation shows (``build_peer``). Defaults: 20
timed rounds after 1 warm-up on a CPU, 50 after 5 on CUDA. On a CPU shared with other work,
``--threads 1`` avoids timing the waits of torch's thread pool at each of a step's many kernels.
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
from types import SimpleNamespace
from typing import Callable

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from flatmin.assembly import assemble_stepper
from flatmin.models import CifarResNet, SmallCNN
from flatmin.optim import MultiPassOptimizer, build_optimizer, option_config
from flatmin.optim.build import TRAIN_SIZE_WITHOUT_DATASET
from flatmin.optim.registry import options
from flatmin.runtime import Runtime
from flatmin.step import Stepper

#: Weight averaging over a method, named ``<option>+<averaging.kind>``.
AVERAGED = ["sam+ema", "sgd+swa"]
#: Every config option but AdamW (the same step cost as Adam): SGD first, the baseline; then the averages.
METHODS = ["sgd", *sorted(set(options()) - {"sgd", "adamw"}), *AVERAGED]
BERT_VOCAB, BERT_TOKENS = 30522, 128
PEER_SUFFIX = "[pytorch_optimizer]"
#: ``--optimizer-only``'s default methods: SGD, those with a pytorch_optimizer peer, and those issue 13 timed.
OPTIMIZER_ONLY = ["sgd", "sam", "asam", "gsam", "wsam", "bsam", "friendly_sam", "looksam", "gam", "nso",
                  "sgd_tracer"]


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


def track_profiled_step(contestant: "Contestant | OptimizerOnly") -> None:
    """One step of ``contestant`` measured by the profiler (a CPU's memory), into its ``memory``."""
    kept, peak = profiled_memory(contestant.drive)
    contestant.memory.track(0, kept, peak, timed=contestant.memory.kept is not None)


def method_config(method: str) -> DictConfig:
    """The optimizer config of ``method``: an option's, ``<option>+<averaging.kind>`` averaged."""
    option, _, averaging = method.partition("+")
    cfg = option_config(option)
    if averaging:
        cfg.averaging.kind = averaging
    return cfg


class Contestant:
    """One method on its own copy of the model, assembled with its ``Stepper``, and a fixed batch."""

    def __init__(self, method: str, model_name: str, runtime: Runtime) -> None:
        build, make_batch, batch = MODELS[model_name]
        torch.manual_seed(0)
        self.device = runtime.device
        self.model = build()
        self.inputs, self.targets = make_batch(batch, self.device)
        self.stepper = self.build_stepper(method, runtime)
        self.optimizer = self.stepper.optimizer
        self.times: list[float] = []
        self.timed_passes = 0
        self.memory = StepMemory()

    def build_stepper(self, method: str, runtime: Runtime) -> Stepper:
        return assemble_stepper(self.model, method_config(method), runtime)

    def drive(self) -> None:
        self.stepper.step(self.inputs, self.targets)

    def step(self, timed: bool, profiled: bool = False) -> None:
        """One step; ``profiled`` (off the device: a CPU) measures its memory with the profiler instead
        of timing it (the profiler's bookkeeping would slow it)."""
        if profiled:
            return track_profiled_step(self)
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
                "peak_mib": self.memory.peak() / 2**20 if self.memory.kept is not None else float("nan"),
                "param_mib": sum(p.numel() * p.element_size() for p in self.model.parameters()) / 2**20}


class StepMemory:
    """A contestant's device memory above its weights and batch, from its own steps alone (the
    other contestants' memory does not change while it steps): what its first step left allocated
    (gradients, optimizer state, the method's buffers) plus the largest transient peak of a timed
    step (the warm-up's hold cuDNN's autotuning workspaces). On CUDA from the allocator's counters
    around every step; on a CPU from :func:`profiled_memory` on the first step and on one step
    after the timed rounds."""

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


def profiled_memory(run: Callable[[], object]) -> tuple[int, int]:
    """``run()`` under ``torch.profiler`` with ``profile_memory=True``: the bytes it left allocated
    and the peak of what it had allocated at any moment, both counted from its start, from the
    profiler's allocation and free events of the CPU allocator (every tensor on a CPU), in order."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    events = sorted((event for event in prof.profiler.kineto_results.events()
                     if event.name() == "[memory]" and event.device_type() == torch.autograd.DeviceType.CPU),
                    key=lambda event: event.start_ns())
    total = peak = 0
    for event in events:
        total += event.nbytes()
        peak = max(peak, total)
    return total, peak


class PeerSAM(Contestant):
    """pytorch_optimizer's SAM with flatmin's SAM settings (``flatmin/conf/optimizer/sam.yaml``), on the same
    model and batch, driven as its documentation shows: ``closure(); optimizer.step(closure)``."""

    NAME = "sam" + PEER_SUFFIX

    def build_stepper(self, method: str, runtime: Runtime) -> Stepper:
        from pytorch_optimizer import SAM as PytorchOptimizerSAM

        cfg = option_config("sam")
        peer = PytorchOptimizerSAM(self.model.to(self.device).parameters(), torch.optim.SGD, rho=cfg.rho, lr=cfg.lr,
                                   momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
        return Stepper(self.model, peer, runtime)       # its precision and counters; the peer steps itself

    def drive(self) -> None:
        def closure() -> Tensor:
            self.optimizer.zero_grad()
            with self.stepper.precision.autocast():
                loss = self.stepper.loss_fn(self.model(self.inputs), self.targets)
            loss.backward()
            return loss

        closure()
        self.optimizer.step(closure)
        self.stepper.passes += 2
        self.stepper.micro_steps += 1

    def result(self) -> dict[str, float]:
        return {**super().result(), "extra_buffers": float("nan")}


class GradientReplay:
    """The optimizer-only mode's closure: each pass copies fixed random gradients into ``.grad`` (no
    forward or backward) and times itself, so that a step's time less its closure's is the
    optimizer's own work. It speaks the extended protocol (``indices``, ``backward``,
    ``per_example``, ``batch_size``) with made-up losses, so that every method can run on it."""

    def __init__(self, params: list[Tensor], gradients: list[Tensor], batch_size: int) -> None:
        self.params, self.gradients, self.batch_size = params, gradients, batch_size
        self.losses = torch.linspace(1.0, 2.0, batch_size, device=gradients[0].device)
        self.calls, self.seconds = 0, 0.0

    def __call__(self, indices: Tensor | None = None, backward: bool = True, per_example: bool = False) -> Tensor:
        cuda = self.losses.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.losses.device)
        start = time.perf_counter()
        if backward:
            for param, gradient in zip(self.params, self.gradients):
                if param.grad is None:
                    param.grad = torch.empty_like(param)
            torch._foreach_copy_([param.grad for param in self.params], self.gradients)
        if cuda:
            torch.cuda.synchronize(self.losses.device)
        self.calls += 1
        self.seconds += time.perf_counter() - start
        losses = self.losses if indices is None else self.losses[indices]
        return losses if per_example else losses.mean()


class OptimizerOnly:
    """``--optimizer-only``: one method's step on ResNet-18's parameters (its own copy) with the
    :class:`GradientReplay` closure, driven as ``optimizer.step(closure)``; records the step's time
    less the closure's, and the passes (closure calls)."""

    def __init__(self, method: str, model_name: str, device: torch.device, gradients: list[Tensor]) -> None:
        torch.manual_seed(0)
        self.device = device
        self.model = MODELS[model_name][0]().to(device)
        params = list(self.model.parameters())
        self.closure = GradientReplay(params, gradients, MODELS[model_name][2])
        self.optimizer = self.build_optimizer(method)
        self.times: list[float] = []
        self.timed_passes = 0
        self.memory = StepMemory()

    def build_optimizer(self, method: str) -> torch.optim.Optimizer:
        return build_optimizer(method_config(method), self.model)

    def drive(self) -> None:
        self.optimizer.step(self.closure)

    def step(self, timed: bool, profiled: bool = False) -> None:
        if profiled:
            return track_profiled_step(self)
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
        calls, closure_seconds, start = self.closure.calls, self.closure.seconds, time.perf_counter()
        self.drive()
        if cuda:
            torch.cuda.synchronize(self.device)
        if timed:
            self.times.append(time.perf_counter() - start - (self.closure.seconds - closure_seconds))
            self.timed_passes += self.closure.calls - calls

    def result(self) -> dict[str, float]:
        return {"passes_per_step": self.timed_passes / len(self.times),
                "optimizer_ms": 1e3 * statistics.median(self.times),
                "extra_buffers": extra_buffers(self.optimizer, self.model)
                if isinstance(self.optimizer, MultiPassOptimizer) else float("nan"),
                "peak_mib": self.memory.peak() / 2**20 if self.memory.kept is not None else float("nan"),
                "param_mib": sum(p.numel() * p.element_size() for p in self.model.parameters()) / 2**20}


def sgd_settings(cfg) -> dict[str, float]:   # type: ignore[no-untyped-def]
    return {"lr": cfg.lr, "momentum": cfg.momentum, "nesterov": cfg.nesterov, "weight_decay": cfg.weight_decay}


def build_peer(method: str, model: nn.Module) -> torch.optim.Optimizer:
    """pytorch_optimizer's class for flatmin's ``method`` with the settings of its YAML (the peer's
    default ``foreach``, as a user gets it: batched on CUDA, per tensor on a CPU; bSAM per tensor)."""
    import pytorch_optimizer as peer

    cfg = option_config(method)
    params, sgd = model.parameters(), torch.optim.SGD
    if method in ("sam", "asam"):
        return peer.SAM(params, sgd, rho=cfg.rho, adaptive=cfg.adaptive, **sgd_settings(cfg))
    if method == "gsam":
        base = sgd(model.parameters(), **sgd_settings(cfg))
        fixed_rho = SimpleNamespace(step=lambda: cfg.rho)      # the rho_scheduler it asks for its radius
        return peer.GSAM(params, base, model, fixed_rho, alpha=cfg.alpha, adaptive=cfg.adaptive)
    if method == "wsam":
        return peer.WSAM(model, params, sgd, rho=cfg.rho, gamma=cfg.gamma, adaptive=cfg.adaptive,
                         decouple=cfg.decouple, max_norm=cfg.max_norm, **sgd_settings(cfg))
    if method == "bsam":
        num_data = int(TRAIN_SIZE_WITHOUT_DATASET * cfg.data_factor)
        return peer.BSAM(params, num_data, lr=cfg.lr, betas=tuple(cfg.betas),
                         weight_decay=cfg.prior_precision / num_data, rho=cfg.rho, damping=cfg.damping,
                         foreach=False)     # its batched path fails (4.1.0: a list of s against a scalar list)
    if method == "friendly_sam":
        return peer.FriendlySAM(params, sgd, rho=cfg.rho, sigma=cfg.sigma, lmbda=cfg.lmbda, adaptive=cfg.adaptive,
                                **sgd_settings(cfg))
    if method == "looksam":
        return peer.LookSAM(params, sgd, rho=cfg.rho, k=cfg.k, alpha=cfg.alpha, **sgd_settings(cfg))
    raise ValueError(f"no pytorch_optimizer peer for {method}")


#: flatmin's methods that pytorch_optimizer also has (ASAM: its SAM with ``adaptive=True``, T = |θ|).
PEERS = ("sam", "asam", "gsam", "wsam", "bsam", "friendly_sam", "looksam")
#: The peers whose ``step(closure)`` takes the first pass itself; the others need ``closure()`` first.
PEERS_TAKING_THE_FIRST_PASS = ("gsam", "wsam", "bsam")


class PeerOptimizerOnly(OptimizerOnly):
    """pytorch_optimizer's version of a method (``<method>[pytorch_optimizer]``) in the optimizer-only
    mode, driven as its documentation shows."""

    def build_optimizer(self, method: str) -> torch.optim.Optimizer:
        self.method = method.partition("[")[0]
        self.closure()          # bSAM's state is made for tensors with a gradient: give them one first
        return build_peer(self.method, self.model)

    def drive(self) -> None:
        if self.method == "gsam":       # its closure returns (outputs, loss)
            self.optimizer.step(lambda: (None, self.closure()))
            return
        if self.method not in PEERS_TAKING_THE_FIRST_PASS:
            self.closure()
        self.optimizer.step(self.closure)


def optimizer_only(methods: list[str], model_name: str, device: torch.device, steps: int,
                   warmup: int) -> dict[str, dict[str, float]]:
    """Per method, its passes, median optimizer-only ms and memory, from interleaved rounds."""
    torch.manual_seed(1)
    gradients = [torch.randn_like(p) for p in MODELS[model_name][0]().to(device).parameters()]
    contestants = {method: (PeerOptimizerOnly if method.endswith(PEER_SUFFIX) else OptimizerOnly)(
        method, model_name, device, gradients) for method in methods}
    return run_rounds(contestants, device, steps, warmup)


def peer_available() -> bool:
    """Whether pytorch_optimizer (the largest peer library) is importable, for ``PeerSAM``."""
    return importlib.util.find_spec("pytorch_optimizer") is not None


def time_methods(methods: list[str], model_name: str, runtime: Runtime, steps: int,
                 warmup: int) -> dict[str, dict[str, float]]:
    """Per method, its passes, median ms per step and extra buffers, from interleaved rounds."""
    # Process-wide allocations made on first use (cuBLAS's workspace) must not count as the first
    # contestant's memory: a throwaway step takes them first.
    Contestant("sgd", model_name, runtime).step(timed=False)
    contestants = {method: (PeerSAM if method == PeerSAM.NAME else Contestant)(method, model_name, runtime)
                   for method in methods}
    return run_rounds(contestants, runtime.device, steps, warmup)


def run_rounds(contestants: dict[str, Contestant | OptimizerOnly], device: torch.device, steps: int,
               warmup: int) -> dict[str, dict[str, float]]:
    """``warmup + steps`` interleaved rounds, one step of each contestant, the last ``steps`` timed. On a
    CPU, one profiled step of each before the rounds (what a first step leaves allocated) and one after
    (the transient peak of a step): ``StepMemory``."""
    cpu = device.type != "cuda"
    if cpu:
        for contestant in contestants.values():
            contestant.step(timed=False, profiled=True)
    for round_index in range(warmup + steps):
        for contestant in contestants.values():
            contestant.step(timed=round_index >= warmup)
    if cpu:
        for contestant in contestants.values():
            contestant.step(timed=False, profiled=True)
    return {method: contestant.result() for method, contestant in contestants.items()}


def measured(value: float) -> str:
    """A figure to two decimals, or "n/a" where it was not measured (NaN)."""
    return "n/a" if math.isnan(value) else f"{value:.2f}"


def report_optimizer_only(methods: list[str], models: list[str], device: torch.device, steps: int, warmup: int,
                          machine: str, json_path: str | None) -> None:
    """``--optimizer-only``: the table of :func:`optimizer_only`, each method beside its peer."""
    if peer_available():
        methods = [name for method in methods
                   for name in (method, *([method + PEER_SUFFIX] if method in PEERS else []))]
    print("| model | method | passes/step | optimizer ms/step | extra buffers | peak memory above SGD |")
    print("|---|---|---|---|---|---|")
    results = []
    for model_name in models:
        rows = optimizer_only(methods, model_name, device, steps, warmup)
        for method, row in rows.items():
            row.update(model=model_name, method=method,
                       peak_above_sgd=(row["peak_mib"] - rows["sgd"]["peak_mib"]) / row["param_mib"])
            results.append(row)
            print(f"| {model_name} | {method} | {row['passes_per_step']:.3g} | {row['optimizer_ms']:.1f} | "
                  f"{measured(row['extra_buffers'])} | {measured(row['peak_above_sgd'])} |", flush=True)
    if json_path:
        with open(json_path, "w") as file:
            json.dump({"date": str(date.today()), "machine": machine, "mode": "optimizer-only", "results": results},
                      file, indent=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--models", nargs="+", choices=list(MODELS),
                        help="default: resnet18 bert; resnet18 with --optimizer-only")
    parser.add_argument("--methods", nargs="+", choices=METHODS,
                        help="default: every option; with --optimizer-only: " + " ".join(OPTIMIZER_ONLY))
    parser.add_argument("--steps", type=int,
                        help="timed rounds, one step of each method (default: 30 on CUDA, 5 on a CPU; "
                             "with --optimizer-only 50 and 20)")
    parser.add_argument("--warmup", type=int, help="untimed rounds first (default: 5 on CUDA, 1 on a CPU)")
    parser.add_argument("--optimizer-only", action="store_true",
                        help="time the optimizer's own work on fixed gradients, no forward or backward")
    parser.add_argument("--threads", type=int, help="torch's CPU threads (default: torch's; 1 on a shared, "
                        "busy CPU, where a parallel region waits for every thread at each of a step's many kernels)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.optimizer_only:
        args.models = args.models or ["resnet18"]
        args.methods = args.methods or OPTIMIZER_ONLY
    args.models = args.models or ["resnet18", "bert"]
    args.methods = args.methods or METHODS
    runtime = Runtime.local(args.device, args.precision)
    device, precision = runtime.device, runtime.precision.name
    torch.backends.cudnn.benchmark = True       # as the trainer sets it (flatmin/train/seeding.py)
    cuda = device.type == "cuda"
    steps = args.steps or ((50 if cuda else 20) if args.optimizer_only else (30 if cuda else 5))
    warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
    machine = torch.cuda.get_device_name(device) if cuda else \
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(f"# optimizer step benchmark{' (optimizer only)' if args.optimizer_only else ''}, {date.today()}, "
          f"{machine}, torch {torch.__version__}, {precision}, median of {steps} interleaved rounds after "
          f"{warmup} warm-up\n")
    methods = ["sgd", *(m for m in args.methods if m != "sgd")]     # SGD is always there: the baseline
    if args.optimizer_only:
        report_optimizer_only(methods, args.models, device, steps, warmup, machine, args.json)
        return
    print("| model | method | passes/step | ms/step | time ratio to SGD | extra buffers | peak memory above SGD |")
    print("|---|---|---|---|---|---|---|")
    results = []
    if "sam" in methods and peer_available():
        methods.append(PeerSAM.NAME)
    for model_name in args.models:
        rows = time_methods(methods, model_name, runtime, steps, warmup)
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
