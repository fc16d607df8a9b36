"""One optimizer step as the trainer drives it: the closure, and what happens around the base step.

Every optimizer, single- or multi-pass, is driven the same way (``docs/optimizers.md``, "The common
contract"): the trainer builds a closure for the micro-batch and calls ``optimizer.step(closure)``.
Around it this module enforces the rules the methods rely on:

* BatchNorm running statistics come from the first pass of a step only;
* fp16: each pass's gradients are unscaled and checked; an overflow anywhere skips the base step;
* gradient accumulation: each micro-batch gets its own perturbation and its own ``G``; the base
  step uses the mean of the micro-batches' ``G`` (m-sharpness with m = the micro-batch size);
* gradient clipping applies to that final ``G``, just before the base step;
* what else a method's ``G`` holds (``MultiPassOptimizer.gate_tensors``: bSAM's ``gs``) is
  averaged with the gradients, over micro-batches and replicas, and not clipped;
* DDP: every pass runs under ``model.no_sync()``, so each replica perturbs with its own
  gradient, and the final ``G`` is averaged across replicas by one all-reduce (with the fp16
  overflow flag, so all replicas skip together);
* the first pass's outputs (what the trainer's accuracy counts) are copied out of the model's
  output memory, which a CUDA-graph replay of the next pass reuses.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim import Optimizer

from flatmin.optim import MultiPassOptimizer
from flatmin.train.distributed import GradientAverager, is_ddp
from flatmin.train.precision import LossScaler


class BatchNormFirstPass:
    """Keeps BN running statistics as the first pass of a step left them.

    The passes after the first run in train mode (batch statistics, as the method's gradient
    needs) but their updates of ``running_mean``/``running_var``/``num_batches_tracked`` are
    undone by copying back a snapshot taken before the second pass. The spec's alternative, BN
    momentum 0 for the later passes, leaves NaN in the statistics when a perturbed pass overflows
    (0·NaN = NaN); the copy does not.
    """

    def __init__(self, model: nn.Module) -> None:
        self.buffers = [buffer for module in model.modules()
                        if isinstance(module, _BatchNorm) and module.track_running_stats
                        for buffer in (module.running_mean, module.running_var, module.num_batches_tracked)
                        if buffer is not None]
        self.snapshot = [torch.empty_like(buffer) for buffer in self.buffers]
        self.passes = 0

    def begin_step(self) -> None:
        self.passes = 0

    def begin_pass(self) -> None:
        """Call at the start of every pass; before the second, the statistics are snapshotted."""
        if self.passes == 1 and self.buffers:
            torch._foreach_copy_(self.snapshot, self.buffers)
        self.passes += 1

    def end_step(self) -> None:
        """Undo what passes after the first did to the statistics."""
        if self.passes > 1 and self.buffers:
            torch._foreach_copy_(self.buffers, self.snapshot)


class Stepper:
    """Runs ``optimizer.step(closure)`` on micro-batches and decides when the base step happens.

    ``accumulate`` micro-batches make one optimizer step; ``step`` returns True when a base step
    was taken or skipped for overflow (the scheduler then advances), False while accumulating.
    A ``DistributedDataParallel`` model switches on the DDP rules above.
    """

    def __init__(self, model: nn.Module, optimizer: Optimizer, loss_fn: Callable[[Tensor, Tensor], Tensor],
                 autocast: Callable[[], ContextManager[Any]], scaler: LossScaler, accumulate: int = 1,
                 grad_clip_norm: float | None = None) -> None:
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.autocast = autocast
        self.scaler = scaler
        self.accumulate = accumulate
        self.grad_clip_norm = grad_clip_norm
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.batchnorm = BatchNormFirstPass(model)
        self.passes = 0
        self.micro_steps = 0
        self._micro_batch = 0
        self._group_size = accumulate
        self._accumulated: list[Tensor] | None = None
        distributed = is_ddp(model)
        self._passes_context = model.no_sync if distributed else contextlib.nullcontext
        self._average = GradientAverager(torch.distributed.get_world_size()) if distributed else None
        if isinstance(optimizer, MultiPassOptimizer):
            optimizer.base_step_gate = self._gate

    def step(self, inputs: Any, targets: Tensor, group_size: int | None = None) -> tuple[Tensor, Tensor, bool]:
        """One micro-batch through the optimizer. ``group_size`` shortens the last accumulation
        group of an epoch. Returns the first pass's loss and outputs, and whether a step ended."""
        self._group_size = group_size or self.accumulate
        first: dict[str, Tensor] = {}

        def closure() -> Tensor:
            self.batchnorm.begin_pass()
            self.model.zero_grad(set_to_none=True)
            with self._passes_context():
                with self.autocast():
                    outputs = self.model(inputs)
                    loss = self.loss_fn(outputs, targets)
                self.scaler.backward(loss, self.params)
            self.passes += 1
            if "outputs" not in first:
                # A copy, not a view: under CUDA graphs (compile_mode=reduce-overhead) the next pass
                # replays the graph into the same output memory, which would overwrite them.
                first["outputs"] = outputs.detach().clone()
            return loss.detach()

        self.batchnorm.begin_step()
        try:
            if isinstance(self.optimizer, MultiPassOptimizer):
                loss = self.optimizer.step(closure)
            else:
                loss = closure()
                if self._gate():
                    self.optimizer.step()
        finally:
            self.batchnorm.end_step()
        self.micro_steps += 1
        self._micro_batch += 1
        ended = self._micro_batch == self._group_size
        if ended:
            self._micro_batch = 0
            self.scaler.update()
        return loss, first["outputs"], ended

    def _gate(self) -> bool:
        """Between ``G`` in ``.grad`` and the base step: accumulate, average replicas, skip on overflow, clip."""
        grads = [p.grad for p in self.params if p.grad is not None]
        if isinstance(self.optimizer, MultiPassOptimizer):
            grads += self.optimizer.gate_tensors()          # the rest of G (bSAM's gs), averaged alike
        if self._group_size > 1:
            if self._accumulated is None:
                self._accumulated = [torch.zeros_like(g) for g in grads]
            torch._foreach_add_(self._accumulated, grads)
            if self._micro_batch + 1 < self._group_size:
                return False
            torch._foreach_mul_(self._accumulated, 1.0 / self._group_size)
            torch._foreach_copy_(grads, self._accumulated)
            torch._foreach_zero_(self._accumulated)
        if self._average is not None:
            self._average(grads, self.scaler.found_inf)
        if self.scaler.overflowed():
            return False
        if self.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip_norm, foreach=True)
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"passes": self.passes, "micro_steps": self.micro_steps, "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.passes, self.micro_steps = state["passes"], state["micro_steps"]
        self.scaler.load_state_dict(state["scaler"])
