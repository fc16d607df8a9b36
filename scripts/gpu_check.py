"""Check a GPU machine: does every GPU-specific path of flatmin work here, and how fast is it?

    scripts/gpu_check.sh [OUT_DIR]                   # make gpu-check; the wrapper sets up the imports
    DEVICE=cpu QUICK=1 scripts/gpu_check.sh OUT_DIR  # the smoke mode CI runs (make test-ci-slow)

Sections, most important first; each runs in its own process under a time cap, and one that the
budget left (``BUDGET_S``, default 450 s) cannot hold is skipped with a note:

1. ``optimizers``: every ``flatmin/conf/optimizer`` method in bf16 and fp16, ``STEPS`` steps of ResNet-18
   (CIFAR stem, channels_last, batch 128) through the trainer's ``Stepper``: finite losses, ms per
   step, peak device memory and its excess over SGD's; in fp16 a forced overflow (loss scale 2^127)
   must leave the weights untouched and halve the scale, and training must go on finite after it.
2. ``trainer``: the real command line on digits, every method, bf16 (30 epochs, the quick start's
   bar of 0.90 test accuracy) and fp16 (10 epochs); the CPU smoke mode, five of them for 2 batches.
3. ``adapters``: ``FlatminTrainer`` (transformers) with SAM and bSAM in fp16, a loss scale that
   overflows, accumulation and clipping, bit for bit against the ``Stepper`` on the same micro-batches
   (the smoke mode: bf16, as accelerate keeps fp16 off on a CPU).
4. ``data_path``: ``scripts/bench.py`` in bf16 with channels_last: each loader alone, and SGD/SAM
   fed by it against a fixed on-device batch.
5. ``compile``: SAM through the ``Stepper`` on a compiled model (inductor): no new graph after the
   first step; under CUDA graphs (``reduce-overhead``) the first pass's outputs must survive the
   second pass's replay; then ``train.py trainer.compile=true`` in both modes with
   ``TORCH_LOGS=recompiles``.
6. ``ddp``: ``torchrun`` over every GPU, when there are at least two.
7. ``bench_optim``: ``scripts/bench_optim.py`` in bf16 (ResNet-18, the BERT-style encoder), with
   pytorch_optimizer's SAM beside flatmin's when that package is importable.

Written to OUT_DIR: ``summary.txt`` (for reading), ``summary.json`` (every figure) and
``sections.log`` (each section's own output). Problems are of two kinds: ``broken`` (a check that
failed: exit status 1) and ``target`` (a speed target missed: reported, exit status 0).
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import math
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
#: Data path target from the design: the device-resident loader keeps ≥ 70% of the synthetic ceiling.
DATA_PATH_TARGET = 0.70
#: The quick start's accuracy bar (the CPU suite asserts it too).
DIGITS_ACCURACY_BAR = 0.90


class Section:
    """One section's findings, written to its result file after every change, so that a section
    stopped at its time cap still reports what it measured."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.result: dict[str, Any] = {"broken": [], "target": [], "notes": [], "figures": {}}
        self.save()

    def broken(self, message: str) -> None:
        self.result["broken"].append(message)
        self.save()

    def check(self, condition: bool, message: str) -> bool:
        """Record ``message`` as broken unless ``condition``; return ``condition``."""
        if not condition:
            self.broken(message)
        return condition

    def target(self, message: str) -> None:
        self.result["target"].append(message)
        self.save()

    def note(self, message: str) -> None:
        self.result["notes"].append(message)
        self.save()

    def figure(self, key: str, value: Any) -> None:
        self.result["figures"][key] = value
        self.save()

    def save(self) -> None:
        self.path.write_text(json.dumps(self.result, indent=1, default=str))


class Context:
    """What every section knows: the device, the mode, where to work and how long it may take."""

    def __init__(self, args: argparse.Namespace, deadline: float) -> None:
        self.device_name = args.device
        self.quick = args.quick
        self.work = Path(args.work)
        self.deadline = deadline

    @property
    def cuda(self) -> bool:
        return self.device_name.startswith("cuda")

    def seconds_left(self) -> float:
        return self.deadline - time.monotonic()

    def command(self, args: list[str], **env: str) -> subprocess.CompletedProcess:
        """Run ``args`` from the repository root within the time this section has left."""
        print("$", " ".join(args), flush=True)
        result = run_bounded(args, self.seconds_left() - 2, env={**os.environ, **env}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        print(result.stdout[-6000:], result.stderr[-6000:], sep="\n", flush=True)
        return result


def run_bounded(args: list[str], seconds: float, **kwargs: Any) -> subprocess.CompletedProcess:
    """``subprocess.run`` in a new process group, all of which is killed after ``seconds``
    (``subprocess.TimeoutExpired`` then propagates): a stopped section leaves nothing running."""
    with subprocess.Popen(args, cwd=ROOT, start_new_session=True, **kwargs) as process:
        try:
            stdout, stderr = process.communicate(timeout=max(1.0, seconds))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
    return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


def optimizer_names() -> list[str]:
    """Every ``flatmin/conf/optimizer`` option, SGD first (the baseline)."""
    from flatmin.optim import option_names

    names = option_names()
    return ["sgd", *(name for name in names if name != "sgd")]


def synchronize(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- 0. environment --------------------------------------------------------------------------------
def section_environment(ctx: Context, out: Section) -> None:
    import torch

    facts: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                             "cuda": torch.version.cuda, "date": str(date.today())}
    if ctx.cuda:
        out.check(torch.cuda.is_available(), "torch sees no CUDA device")
        properties = torch.cuda.get_device_properties(0)
        facts.update(device=properties.name, gpus=torch.cuda.device_count(),
                     memory_gib=round(properties.total_memory / 2**30, 1),
                     capability=f"{properties.major}.{properties.minor}", bf16=torch.cuda.is_bf16_supported())
    else:
        facts.update(device=f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)", gpus=0)
    for package in ("timm", "transformers", "hydra-core", "omegaconf", "pytorch_optimizer", "scikit-learn"):
        try:
            facts[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            facts[package] = None
    out.figure("facts", facts)


# -- 1. every optimizer through the Stepper, bf16 and fp16 -----------------------------------------
def section_optimizers(ctx: Context, out: Section) -> None:
    import torch

    from flatmin.models import CifarResNet, SmallCNN

    device = torch.device(ctx.device_name)
    torch.backends.cudnn.benchmark = True       # as the trainer sets it (flatmin/train/seeding.py)
    if ctx.quick:
        # Narrow (width 8): a CPU has no fast bf16/fp16 kernels (400 ms a bf16 pass of the default widths).
        build, shape, batch, steps = (lambda: SmallCNN(10, in_channels=1, widths=(8, 8, 8))), (1, 8, 8), 16, 2
    else:
        build, shape, batch, steps = (lambda: CifarResNet(depth=18, num_classes=10)), (3, 32, 32), 128, 20
    out.figure("setup", {"model": "small_cnn (widths 8)" if ctx.quick else "resnet18", "batch": batch, "steps": steps,
                         "warmup": 3, "channels_last": True})
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(batch, *shape, generator=generator).to(device).contiguous(memory_format=torch.channels_last)
    targets = torch.randint(0, 10, (batch,), generator=generator).to(device)
    # Process-wide allocations made on first use (cuBLAS's workspace) must not count as SGD's: a
    # throwaway step takes them first.
    method_steps("sgd", "bf16", build, inputs, targets, 1, device, out)
    gc.collect()
    rows: list[dict[str, Any]] = []
    for precision in ("bf16", "fp16"):
        for method in optimizer_names():
            row = method_steps(method, precision, build, inputs, targets, steps, device, out)
            if device.type == "cuda":
                sgd = row if method == "sgd" else next(r for r in rows if (r["method"], r["precision"]) ==
                                                       ("sgd", precision))
                above = row["peak_bytes"] - sgd["peak_bytes"]
                row.update(above_sgd_mib=above / 2**20, above_sgd_in_params=above / row["param_bytes"])
            rows.append(row)
            out.figure("rows", rows)
            if device.type == "cuda":   # free the last method's memory before the next one's peak is measured:
                gc.collect()            # the Stepper and its optimizer refer to each other
                torch.cuda.empty_cache()


def method_steps(method: str, precision: str, build: Callable[[], Any], inputs: Any, targets: Any, steps: int,
                 device: Any, out: Section) -> dict[str, Any]:
    """``steps`` timed steps of one method after 3 warm-up steps (cuDNN autotunes in those): losses,
    median ms per step, the peak device memory above the weights and batch, and in fp16 the forced
    overflow."""
    import torch

    from flatmin.assembly import assemble_stepper
    from flatmin.optim import option_config
    from flatmin.runtime import Runtime

    resident = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0   # the batch
    torch.manual_seed(0)
    runtime = Runtime.local(str(device), precision, channels_last=True)
    stepper = assemble_stepper(build(), option_config(method), runtime)
    params = list(stepper.model.parameters())
    losses, times = [], []
    for index in range(3 + steps):
        if index == 3 and device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)     # cuDNN's autotuning workspaces are behind
        synchronize(device)
        start = time.perf_counter()
        loss, _, _ = stepper.step(inputs, targets)
        synchronize(device)
        if index >= 3:
            times.append(time.perf_counter() - start)
        losses.append(loss.item())
    row: dict[str, Any] = {"method": method, "precision": precision,
                           "passes_per_step": stepper.passes / stepper.micro_steps,
                           "ms_per_step": 1e3 * statistics.median(times), "first_loss": losses[0],
                           "last_loss": losses[-1], "param_bytes": sum(p.numel() * p.element_size() for p in params)}
    label = f"{method} {precision}"
    out.check(all(math.isfinite(value) for value in losses), f"{label}: a non-finite loss in {losses}")
    if losses[-1] >= losses[0]:
        out.note(f"{label}: the loss did not fall on a fixed batch ({losses[0]:.4g} -> {losses[-1]:.4g})")
    if device.type == "cuda":
        row["peak_bytes"] = torch.cuda.max_memory_allocated(device) - resident
        row["peak_mib"] = row["peak_bytes"] / 2**20
    if precision == "fp16":
        row["overflow_skips_and_backs_off"] = forced_overflow(stepper, params, inputs, targets, out, label)
    return row


def forced_overflow(stepper: Any, params: list, inputs: Any, targets: Any, out: Section, label: str) -> bool:
    """A loss scale of 2^127 overflows every pass: the step must leave the weights exactly as they
    were and halve the scale; three steps at the old scale must then be finite and move the weights."""
    import torch

    scaler = stepper.scaler
    before = [p.detach().clone() for p in params]
    old_scale = scaler.scale.item()
    scaler.scale.fill_(2.0**127)
    stepper.step(inputs, targets)
    ok = out.check(all(torch.equal(p, b) for p, b in zip(params, before)),
                   f"{label}: an overflowing fp16 step changed the weights")
    ok &= out.check(scaler.scale.item() == 2.0**126, f"{label}: the loss scale did not halve after an overflow "
                                                     f"(it is {scaler.scale.item()})")
    scaler.scale.fill_(old_scale)
    losses = [stepper.step(inputs, targets)[0].item() for _ in range(3)]
    ok &= out.check(all(math.isfinite(value) for value in losses),
                    f"{label}: non-finite losses {losses} after a skipped step")
    ok &= out.check(any(not torch.equal(p, b) for p, b in zip(params, before)),
                    f"{label}: the weights did not move after a skipped step")
    return ok


# -- 2. the real trainer on digits, every method ---------------------------------------------------
def run_summaries(sweep_dir: Path) -> dict[str, dict[str, Any]]:
    """The ``summary.json`` of every job of a sweep, by the job's optimizer."""
    import yaml

    summaries = {}
    for path in sorted(sweep_dir.glob("*/summary.json")):
        config = yaml.safe_load((path.parent / "config.yaml").read_text())
        summaries[config["optimizer"]["name"]] = json.loads(path.read_text())
    return summaries


#: The smoke mode's methods for the trainer section: the baseline, a two-pass method, a full optimizer
#: (bSAM), the extended closure (ESAM) and a many-pass one with a schedule (NSO); the CPU suite's quick
#: starts train every method through the same command.
SMOKE_TRAINER_METHODS = ("sgd", "sam", "bsam", "esam", "nso")


def section_trainer(ctx: Context, out: Section) -> None:
    methods = list(SMOKE_TRAINER_METHODS) if ctx.quick else optimizer_names()
    plans = [("fp32", 1, 0.0)] if ctx.quick else [("bf16", 30, DIGITS_ACCURACY_BAR), ("fp16", 10, 0.0)]
    for precision, epochs, bar in plans:
        sweep = ctx.work / f"digits_{precision}"
        extra = ["trainer.limit_train_batches=2", "trainer.limit_eval_batches=1"] if ctx.quick else []
        result = ctx.command([sys.executable, "train.py", "-m", f"optimizer={','.join(methods)}",
                              f"trainer.device={ctx.device_name}", f"trainer.precision={precision}",
                              f"trainer.epochs={epochs}", "trainer.progress_bar=false", f"hydra.sweep.dir={sweep}",
                              *extra], FLATMIN_LOG_DIR=str(ctx.work))
        out.check(result.returncode == 0, f"train.py -m (digits, {precision}) exited {result.returncode}: "
                                          f"{result.stderr.strip()[-300:]}")
        summaries = run_summaries(sweep)
        rows = []
        for method in methods:
            summary = summaries.get(method)
            label = f"digits {method} {precision}"
            if not out.check(summary is not None and summary.get("status") == "completed",
                             f"{label}: no completed run ({summary and summary.get('error')})"):
                continue
            accuracy = summary["test"]["best_val"]["test/accuracy"]
            rows.append({"method": method, "precision": precision, "epochs": epochs, "test_accuracy": accuracy,
                         "samples_per_s": summary["samples_per_s"], "wall_time_s": summary["wall_time_s"],
                         "device": summary["device"]})
            out.check(summary["device"].startswith(ctx.device_name.split(":")[0]) and
                      summary["precision"] == precision, f"{label}: ran on {summary['device']} in "
                                                         f"{summary['precision']}")
            out.check(accuracy >= bar, f"{label}: test accuracy {accuracy:.3f} below {bar}")
        out.figure(f"digits_{precision}", rows)


# -- 3. the adapters -------------------------------------------------------------------------------
#: The adapters' check: methods through FlatminTrainer, micro-batches, micro-batches per step.
ADAPTER_METHODS, ADAPTER_BATCHES, ADAPTER_ACCUMULATE = ("sam", "bsam"), 7, 2


def section_adapters(ctx: Context, out: Section) -> None:
    """``FlatminTrainer`` (transformers) against the ``Stepper`` on the same micro-batches, bit for bit:
    fp16 with a loss scale that overflows on a GPU (accelerate keeps fp16 off on a CPU, so the smoke
    mode runs bf16), accumulation with a short last group, clipping."""
    import torch
    from torch import nn
    from transformers import TrainerCallback, TrainingArguments
    from transformers.modeling_outputs import SequenceClassifierOutput

    from flatmin.integrations.hf import FlatminTrainer, forward_logits
    from flatmin.optim import build_optimizer
    from flatmin.runtime import Runtime
    from flatmin.step import Stepper

    class Classifier(nn.Sequential):
        def forward(self, x: torch.Tensor) -> SequenceClassifierOutput:
            return SequenceClassifierOutput(logits=super().forward(x))

    class Reseed(TrainerCallback):
        """The seed before every micro-batch (bSAM's noise), where the reference sets it."""

        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            torch.manual_seed(7)

        on_substep_end = on_step_begin

    def network() -> nn.Module:
        torch.manual_seed(0)
        return Classifier(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 4)).to(ctx.device_name)

    precision = "fp16" if ctx.cuda else "bf16"
    scale = 2.0 ** 40                               # the first steps overflow and back off
    generator = torch.Generator().manual_seed(1)
    x, labels = torch.randn(8 * ADAPTER_BATCHES, 16, generator=generator), torch.randint(0, 4, (8 * ADAPTER_BATCHES,))
    rows = [{"x": x[i], "labels": labels[i]} for i in range(len(labels))]
    groups = [min(ADAPTER_ACCUMULATE, ADAPTER_BATCHES - start) for start in range(0, ADAPTER_BATCHES, ADAPTER_ACCUMULATE)]
    for method in ADAPTER_METHODS:
        settings = {"batch_split": 2, "weight_decay": 0.0} if method == "bsam" else {}
        reference = network()
        stepper = Stepper(reference, build_optimizer(method, reference, lr=0.05, **settings),
                          Runtime.local(ctx.device_name, precision), accumulate=ADAPTER_ACCUMULATE, grad_clip_norm=1.0,
                          forward=forward_logits)
        if precision == "fp16":
            stepper.scaler.scale.fill_(scale)
        start = 0
        for size in groups:
            for _ in range(size):
                torch.manual_seed(7)
                stepper.step({"x": x[start:start + 8].to(ctx.device_name)}, labels[start:start + 8].to(ctx.device_name),
                             group_size=size)
                start += 8
        hosted = network()
        args = TrainingArguments(str(ctx.work / f"adapters_{method}"), per_device_train_batch_size=8,
                                 gradient_accumulation_steps=ADAPTER_ACCUMULATE, max_grad_norm=1.0, num_train_epochs=1,
                                 lr_scheduler_type="constant", train_sampling_strategy="sequential", report_to=[],
                                 save_strategy="no", use_cpu=not ctx.cuda, disable_tqdm=True,
                                 **{precision: True})
        trainer = FlatminTrainer(model=hosted, args=args, train_dataset=rows, callbacks=[Reseed()],
                                 optimizers=(build_optimizer(method, hosted, lr=0.05, **settings), None))
        if trainer.accelerator.scaler is not None:      # fp16: flatmin's LossScaler takes these settings
            trainer.accelerator.scaler = torch.amp.GradScaler(ctx.device_name, init_scale=scale)
        trainer.train()
        pairs = list(zip((*reference.parameters(), *reference.buffers()), (*hosted.parameters(), *hosted.buffers())))
        difference = max((a.double() - b.double()).abs().max().item() for a, b in pairs)
        hosted_scale = trainer.stepper.scaler.scale.item()
        out.check(all(torch.equal(a, b) for a, b in pairs),
                  f"FlatminTrainer {method} {precision} differs from the Stepper by {difference:.3g}")
        if precision == "fp16":
            out.check(hosted_scale < scale and hosted_scale == stepper.scaler.scale.item(),
                      f"FlatminTrainer {method} fp16: loss scale {hosted_scale:g}, the Stepper's "
                      f"{stepper.scaler.scale.item():g} (from {scale:g}: an overflow must back it off)")
        out.figure(f"trainer_{method}_{precision}", {"max_difference": difference, "loss_scale": hosted_scale,
                                                     "global_step": trainer.state.global_step})


# -- 4. the data path ------------------------------------------------------------------------------
def section_data_path(ctx: Context, out: Section) -> None:
    report = ctx.work / "bench.json"
    sizes = (["--rounds", "2", "--steps", "2", "--warmup", "1", "--train-images", "256", "--batch-size", "16",
              "--workers", "0", "--model", "small_cnn", "--precisions", "auto"] if ctx.quick
             else ["--precisions", "bf16", "--channels-last"])
    result = ctx.command([sys.executable, "scripts/bench.py", "--device", ctx.device_name, *sizes,
                          "--json", str(report)])
    if not out.check(result.returncode == 0 and report.is_file(),
                     f"scripts/bench.py exited {result.returncode}: {result.stderr.strip()[-300:]}"):
        return
    results = json.loads(report.read_text())["results"]
    out.figure("bench", results)
    for row in results:
        if row["kind"] == "step" and row["loader"] == "gpu" and row["of_synthetic"] < DATA_PATH_TARGET:
            out.target(f"{row['optimizer']} fed by the device-resident loader runs at {row['of_synthetic']:.2f} of "
                       f"the synthetic ceiling (target {DATA_PATH_TARGET})")


# -- 5. torch.compile ------------------------------------------------------------------------------
def compiled_sam_steps(ctx: Context, out: Section, mode: str) -> None:
    """SAM on a compiled SmallCNN (digits' shapes, so that ``train.py`` below reuses the kernels):
    one graph set after the first step, and the returned outputs are the first pass's."""
    import torch
    from torch import nn
    from torch._dynamo.utils import counters

    from flatmin.assembly import assemble_stepper
    from flatmin.models import SmallCNN
    from flatmin.optim import option_config
    from flatmin.runtime import Runtime

    runtime = Runtime.local(ctx.device_name, "bf16" if ctx.cuda else "fp32", compile=True, compile_mode=mode,
                            compile_backend="aot_eager" if ctx.quick else "inductor")
    device = runtime.device
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    module = SmallCNN(num_classes=10, in_channels=1)
    stepper = assemble_stepper(module, option_config("sam"), runtime)
    inputs, targets = torch.randn(64, 1, 8, 8, device=device), torch.randint(0, 10, (64,), device=device)
    label = f"compile ({mode})"
    try:
        start = time.perf_counter()
        stepper.step(inputs, targets)
        synchronize(device)
        first_step_s = time.perf_counter() - start
        graphs = counters["stats"]["unique_graphs"]
        consistent = True
        for _ in range(5):
            loss, outputs, _ = stepper.step(inputs, targets)
            recomputed = nn.functional.cross_entropy(outputs.float(), targets)
            consistent &= bool(torch.allclose(recomputed, loss.float(), rtol=1e-3, atol=1e-4))
        out.check(counters["stats"]["unique_graphs"] == graphs,
                  f"{label}: new graphs after the first step ({graphs} -> {counters['stats']['unique_graphs']})")
        out.check(consistent, f"{label}: the outputs returned by the step are not the first pass's "
                              "(overwritten by the second pass)")
        cudagraph_counters = {key: value for key, value in counters["inductor"].items() if "cudagraph" in key}
        out.figure(f"stepper_{mode}", {"first_step_s": first_step_s, "graphs": graphs, "outputs_are_first_pass":
                                       consistent, "cudagraph_counters": cudagraph_counters})
        if mode == "reduce-overhead":
            out.figure("raw_outputs_overwritten_by_replay", raw_outputs_overwritten(stepper.model, module, inputs,
                                                                                     targets, runtime.precision))
    except Exception as error:      # what a broken mode raises is the finding
        out.broken(f"{label}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")


def raw_outputs_overwritten(model: Any, module: Any, inputs: Any, targets: Any, precision: Any) -> bool:
    """Two passes of the compiled model without the ``Stepper``, the weights moved between them:
    whether the second pass changed (or invalidated) the first pass's output tensor, which is why
    the ``Stepper`` keeps a copy of it."""
    import torch
    from torch import nn

    with precision.autocast():
        first = model(inputs)
        nn.functional.cross_entropy(first, targets).backward()
    kept = first.detach().clone()
    with torch.no_grad():
        for param in module.parameters():
            param.add_(0.01)
    with precision.autocast():
        nn.functional.cross_entropy(model(inputs), targets).backward()
    try:
        return not torch.equal(first.detach(), kept)
    except RuntimeError:            # CUDA graph trees refuse to read an overwritten output
        return True


def section_compile(ctx: Context, out: Section) -> None:
    modes = ["default"] if ctx.quick else ["default", "reduce-overhead"]
    if ctx.quick:
        out.note("CPU smoke mode: aot_eager backend, no CUDA graphs")
    for mode in modes:
        compiled_sam_steps(ctx, out, mode)
    backend = ["trainer.compile_backend=aot_eager"] if ctx.quick else []
    extra = ["trainer.limit_train_batches=2", "trainer.limit_eval_batches=1"] if ctx.quick else []
    for mode in modes:
        run_dir = ctx.work / f"compile_{mode}"
        result = ctx.command([sys.executable, "train.py", "optimizer=sam", f"trainer.device={ctx.device_name}",
                              f"trainer.epochs={1 if ctx.quick else 2}", "trainer.compile=true",
                              f"trainer.compile_mode={mode}", *backend,
                              *extra, "trainer.progress_bar=false", f"hydra.run.dir={run_dir}"],
                             TORCH_LOGS="recompiles")
        recompiles = [line for line in result.stderr.splitlines() if "Recompiling function" in line]
        reasons = [line.split("[__recompiles]", 1)[1].strip().removeprefix("- ")
                   for line in result.stderr.splitlines() if re.search(r"\[__recompiles\]\s+- ", line)][:10]
        summary_path = run_dir / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        label = f"train.py trainer.compile=true compile_mode={mode}"
        if out.check(result.returncode == 0 and summary.get("status") == "completed",
                     f"{label} exited {result.returncode}: {result.stderr.strip()[-400:]}"):
            skips = [line.strip() for line in result.stderr.splitlines() if "skipping cudagraphs" in line][:3]
            out.figure(f"train_{mode}", {"recompiles": len(recompiles), "reasons": reasons, "cudagraph_skips": skips,
                                         "test_accuracy": summary["test"]["best_val"]["test/accuracy"],
                                         "wall_time_s": summary["wall_time_s"]})


# -- 6. DDP ----------------------------------------------------------------------------------------
def section_ddp(ctx: Context, out: Section) -> None:
    import torch

    gpus = torch.cuda.device_count() if ctx.cuda else 0
    if gpus < 2:
        out.note(f"skipped: {gpus} GPU(s); DDP needs at least 2 (the CPU suite tests DDP on gloo)")
        return
    run_dir = ctx.work / "ddp"
    result = ctx.command([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
                          "train.py", "optimizer=sam", "trainer.device=cuda", "trainer.epochs=5",
                          "trainer.progress_bar=false", f"hydra.run.dir={run_dir}"])
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    if out.check(result.returncode == 0 and summary.get("status") == "completed",
                 f"torchrun over {gpus} GPUs exited {result.returncode}: {result.stderr.strip()[-400:]}"):
        out.figure("ddp", {"gpus": gpus, "test_accuracy": summary["test"]["best_val"]["test/accuracy"],
                           "samples_per_s": summary["samples_per_s"]})


# -- 7. the optimizer step benchmark ---------------------------------------------------------------
def section_bench_optim(ctx: Context, out: Section) -> None:
    report = ctx.work / "bench_optim.json"
    sizes = (["--models", "small_cnn", "--steps", "1", "--warmup", "1", "--precision", "auto"] if ctx.quick
             else ["--models", "resnet18", "bert", "--precision", "bf16"])
    result = ctx.command([sys.executable, "scripts/bench_optim.py", "--device", ctx.device_name, *sizes,
                          "--json", str(report)])
    if out.check(result.returncode == 0 and report.is_file(),
                 f"scripts/bench_optim.py exited {result.returncode}: {result.stderr.strip()[-300:]}"):
        out.figure("bench_optim", json.loads(report.read_text())["results"])


#: name → (function, time cap in seconds on a GPU). The CPU smoke mode has no caps beyond the budget.
SECTIONS: dict[str, tuple[Callable[[Context, Section], None], float]] = {
    "environment": (section_environment, 20),
    "optimizers": (section_optimizers, 70),
    "trainer": (section_trainer, 100),
    "adapters": (section_adapters, 40),
    "data_path": (section_data_path, 80),
    "compile": (section_compile, 130),
    "ddp": (section_ddp, 90),
    "bench_optim": (section_bench_optim, 50),
}
#: A section that the budget left gives less than this is skipped instead of started.
MIN_SECTION_S = 20.0


# -- the driver -------------------------------------------------------------------------------------------
def run_sections(args: argparse.Namespace) -> dict[str, Any]:
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = (out_dir / "sections.log").open("w")
    started = time.monotonic()
    report: dict[str, Any] = {"device": args.device, "quick": args.quick, "budget_s": args.budget, "sections": {}}
    for name, (_, cap) in SECTIONS.items():
        if args.sections and name not in args.sections and name != "environment":
            continue
        left = args.budget - (time.monotonic() - started)
        limit = min(left, cap) if not args.quick else left
        if left < MIN_SECTION_S:
            report["sections"][name] = {"status": "skipped", "notes": [f"skipped: {left:.0f} s of the budget left"],
                                        "broken": [], "target": [], "figures": {}}
            continue
        result_path = Path(args.work) / f"{name}.json"
        section_start = time.monotonic()
        command = [sys.executable, __file__, "--section", name, "--result", str(result_path), "--device", args.device,
                   "--work", args.work, "--seconds", str(limit), *(["--quick"] if args.quick else [])]
        log.write(f"\n===== {name} (cap {limit:.0f} s) =====\n")
        log.flush()
        try:
            returncode = run_bounded(command, limit + 10, stdout=log, stderr=subprocess.STDOUT).returncode
        except subprocess.TimeoutExpired:
            returncode = None
        result = json.loads(result_path.read_text()) if result_path.is_file() else \
            {"broken": [], "target": [], "notes": [], "figures": {}}
        if returncode is None:
            result["broken"].append(f"stopped at its time cap of {limit:.0f} s (figures so far are kept)")
        elif returncode != 0:
            result["broken"].append(f"the section's process exited {returncode} (see sections.log)")
        result["status"] = "broken" if result["broken"] else "ok"
        result["seconds"] = round(time.monotonic() - section_start, 1)
        report["sections"][name] = result
        print(f"{name}: {result['status']} in {result['seconds']} s", flush=True)
    report["seconds"] = round(time.monotonic() - started, 1)
    log.close()
    (out_dir / "summary.json").write_text(json.dumps(report, indent=1, default=str))
    (out_dir / "summary.txt").write_text(render(report))
    return report


def table(rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    """A markdown table of ``columns`` (numbers to 3 significant digits)."""
    def cell(value: Any) -> str:
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    present = [column for column in columns if any(column in row for row in rows)]
    return [f"| {' | '.join(present)} |", f"|{'---|' * len(present)}",
            *(f"| {' | '.join(cell(row.get(column, '')) for column in present)} |" for row in rows)]


def render(report: dict[str, Any]) -> str:
    """The summary for reading: the verdict, then each section's problems, notes and figures."""
    sections = report["sections"]
    facts = sections.get("environment", {}).get("figures", {}).get("facts", {})
    broken = [f"{name}: {message}" for name, section in sections.items() for message in section["broken"]]
    missed = [f"{name}: {message}" for name, section in sections.items() for message in section["target"]]
    lines = [f"# flatmin GPU check, {facts.get('date', date.today())}",
             f"{facts.get('device')} | torch {facts.get('torch')} (CUDA {facts.get('cuda')}) | python "
             f"{facts.get('python')} | {report['seconds']} s of a {report['budget_s']:.0f} s budget"
             + (" | CPU smoke mode" if report["quick"] else ""), "",
             f"verdict: {'BROKEN' if broken else 'OK'} ({len(broken)} broken, {len(missed)} targets missed)", ""]
    lines += [f"- BROKEN {message}" for message in broken] + [f"- TARGET {message}" for message in missed]
    # the first key that a figure's name starts with picks its columns (bench_optim before bench)
    shown = {"bench_optim": ["model", "method", "passes_per_step", "ms_per_step", "ratio", "extra_buffers",
                             "peak_above_sgd"],
             "rows": ["method", "precision", "passes_per_step", "ms_per_step", "peak_mib", "above_sgd_mib",
                      "above_sgd_in_params", "first_loss", "last_loss", "overflow_skips_and_backs_off"],
             "digits": ["method", "precision", "epochs", "test_accuracy", "samples_per_s", "wall_time_s"],
             "bench": ["kind", "loader", "precision", "optimizer", "samples_per_s", "min_samples_per_s",
                       "max_samples_per_s", "ms_per_step", "of_synthetic", "of_sgd"]}
    for name, section in sections.items():
        took = f" ({section['seconds']} s)" if "seconds" in section else ""
        lines += ["", f"## {name}: {section['status']}{took}"]
        lines += [f"- note: {note}" for note in section["notes"]]
        for key, value in section["figures"].items():
            columns = next((columns for prefix, columns in shown.items() if key.startswith(prefix)), None)
            if columns and isinstance(value, list) and value:
                lines += ["", f"{key}:", *table(value, columns)]
            else:
                lines.append(f"- {key}: {json.dumps(value, default=str)}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="folder for summary.txt, summary.json and sections.log")
    parser.add_argument("--device", default=os.environ.get("DEVICE", "cuda"))
    parser.add_argument("--quick", action="store_true", default=os.environ.get("QUICK", "0") == "1",
                        help="the smoke mode: tiny sizes, every section, no time caps beyond the budget")
    parser.add_argument("--budget", type=float, default=float(os.environ.get("BUDGET_S", 450)),
                        help="seconds for all sections together (default 450)")
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS),
                        default=os.environ.get("SECTIONS", "").split() or None,
                        help="run only these sections (and environment); default: all")
    parser.add_argument("--work", help="scratch folder for runs (default: a temporary folder)")
    parser.add_argument("--section", choices=list(SECTIONS), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.section:
        section = Section(Path(args.result))
        try:
            SECTIONS[args.section][0](Context(args, time.monotonic() + args.seconds), section)
        except subprocess.TimeoutExpired as error:
            section.broken(f"stopped at the section's time cap while running {' '.join(map(str, error.cmd))[:200]}")
            raise
        except Exception as error:
            section.broken(f"{type(error).__name__}: {error}")
            raise
        return
    if not args.out:
        parser.error("--out is required")
    with tempfile.TemporaryDirectory(prefix="flatmin_gpu_check_") as scratch:
        args.work = args.work or scratch
        report = run_sections(args)
    print((Path(args.out) / "summary.txt").read_text())
    broken = any(section["broken"] for section in report["sections"].values())
    raise SystemExit(1 if broken else 0)


if __name__ == "__main__":
    main()
