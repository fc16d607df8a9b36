"""One optimizer step as every host drives it: the closure, and what happens around the base step.

Every optimizer, single- or multi-pass, is driven the same way (``docs/optimizers.md``, "The common
contract"): the :class:`Stepper` builds a closure for the micro-batch and calls
``optimizer.step(closure)``; flatmin's trainer, the benchmarks and the GPU check all step through it.
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
  output memory, which a CUDA-graph replay of the next pass reuses;
* the closure is the extended protocol's (:class:`ExtendedClosure`): a pass on some rows of the
  micro-batch, a forward-only pass, per-example losses, under every rule above.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim import Optimizer

from flatmin.optim import MultiPassOptimizer
from flatmin.runtime import Runtime
from flatmin.runtime.distributed import GradientAverager, is_ddp
from flatmin.runtime.precision import LossScaler


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


def group_size(index: int, accumulate: int, micro_batches: int) -> int:
    """The size of the accumulation group micro-batch ``index`` of an epoch belongs to: ``accumulate``,
    but the epoch's last group holds the ``micro_batches`` left (``Stepper.step``'s ``group_size``)."""
    return min(accumulate, micro_batches - (index - index % accumulate))


def call_model(model: nn.Module, inputs: Any) -> Tensor:
    """How a pass reaches the model unless a host says otherwise: ``model(inputs)``."""
    return model(inputs)


class Stepper:
    """Runs ``optimizer.step(closure)`` on micro-batches and decides when the base step happens.

    ``accumulate`` micro-batches make one optimizer step; ``step`` returns True when a base step
    was taken or skipped for overflow (the scheduler then advances), False while accumulating.
    A ``DistributedDataParallel`` model switches on the DDP rules above. Every pass runs in the
    ``runtime``'s precision (its autocast), and the Stepper keeps that precision's loss scaler
    (``scaler``: dynamic under fp16, inert otherwise; an adapter passes one with its host's
    ``GradScaler`` settings). What a host loop tells it instead (keyword arguments): ``forward(model,
    inputs)``, how a pass reaches the model and gets its outputs (``model(inputs)``; a transformers
    model takes ``model(**inputs)`` and returns logits in an output object); ``pass_context``, the
    context every pass runs in (the precision's autocast; Lightning's precision plugin has its own);
    ``no_sync`` and ``replicas``, the context that keeps DDP from all-reducing each pass and how many
    replicas average ``G`` (both taken from a DDP model when not given). The closure it builds is an
    :class:`ExtendedClosure`; ``loss_fn(outputs, targets)`` gives the mean loss and, for the
    protocol's per-example and forward-only calls, takes ``reduction="none"`` (as
    ``torch.nn.functional.cross_entropy``, the default, does).
    """

    def __init__(self, model: nn.Module, optimizer: Optimizer, runtime: Runtime,
                 loss_fn: Callable[..., Tensor] = F.cross_entropy, accumulate: int = 1,
                 grad_clip_norm: float | None = None, scaler: LossScaler | None = None, *,
                 forward: Callable[[nn.Module, Any], Tensor] = call_model,
                 pass_context: Callable[[], ContextManager[Any]] | None = None,
                 no_sync: Callable[[], ContextManager[Any]] | None = None, replicas: int | None = None) -> None:
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.forward = forward
        self.precision = runtime.precision
        self.pass_context = pass_context or runtime.precision.autocast
        self.scaler = scaler if scaler is not None else runtime.precision.loss_scaler()
        self.accumulate = accumulate
        self.grad_clip_norm = grad_clip_norm
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.batchnorm = BatchNormFirstPass(model)
        self.passes = 0
        self.forward_only_passes = 0
        self.micro_steps = 0
        self._micro_batch = 0
        self._group_size = accumulate
        self._accumulated: list[Tensor] | None = None
        if is_ddp(model):
            no_sync, replicas = no_sync or model.no_sync, replicas or torch.distributed.get_world_size()
        self._passes_context = no_sync or contextlib.nullcontext
        self._average = GradientAverager(replicas) if replicas and replicas > 1 else None
        if isinstance(optimizer, MultiPassOptimizer):
            optimizer.base_step_gate = self._gate

    def step(self, inputs: Any, targets: Tensor, group_size: int | None = None) -> tuple[Tensor, Tensor, bool]:
        """One micro-batch through the optimizer. ``group_size`` shortens the last accumulation
        group of an epoch. Returns the method's loss, the outputs each example got from the first
        pass that saw it, and whether a step ended."""
        self._group_size = group_size or self.accumulate
        closure = ExtendedClosure(self, inputs, targets)
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
        return loss, closure.first_outputs(), ended

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
        return {"passes": self.passes, "forward_only_passes": self.forward_only_passes,
                "micro_steps": self.micro_steps, "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.passes, self.micro_steps = state["passes"], state["micro_steps"]
        self.forward_only_passes = state.get("forward_only_passes", 0)   # absent before the extended closure
        self.scaler.load_state_dict(state["scaler"])


def rows(inputs: Any, indices: Tensor) -> Any:
    """The rows ``indices`` of a batch's inputs: a tensor, or a dict of tensors (a tokenised text batch)."""
    if isinstance(inputs, dict):
        return {name: value[indices.to(value.device)] for name, value in inputs.items()}
    return inputs[indices.to(inputs.device)]


class ExtendedClosure:
    """The closure a :class:`Stepper` gives ``optimizer.step`` for one micro-batch: the extended
    protocol ``closure(indices=None, backward=True, per_example=False)`` with ``batch_size``
    (``docs/optimizers.md``, "The extended closure"), of which ``closure()`` is the ordinary pass.

    Every call is a pass under the Stepper's rules: BatchNorm statistics are kept from the first
    call of the step, whatever rows it saw; a backward pass runs under DDP's ``no_sync`` and the
    loss scaler, which unscales its gradients and checks them for overflow (a forward-only pass's
    losses are checked instead); every call counts in
    ``Stepper.passes``, and a forward-only one also in ``Stepper.forward_only_passes``. A pass on
    some rows back-propagates the mean loss of those rows.
    """

    def __init__(self, stepper: Stepper, inputs: Any, targets: Tensor) -> None:
        self.stepper = stepper
        self.inputs = inputs
        self.targets = targets
        self.batch_size = len(targets)
        self._outputs: Tensor | None = None      # each row's outputs from the first call that saw it
        self._seen: Tensor | None = None         # which rows have them, once a first call saw only some

    def __call__(self, indices: Tensor | None = None, backward: bool = True, per_example: bool = False) -> Tensor:
        stepper = self.stepper
        if indices is None:
            inputs, targets = self.inputs, self.targets
        else:
            inputs, targets = rows(self.inputs, indices), self.targets[indices.to(self.targets.device)]
        stepper.batchnorm.begin_pass()
        stepper.passes += 1
        if not backward:
            stepper.forward_only_passes += 1
            with torch.no_grad(), stepper.pass_context():
                outputs = stepper.forward(stepper.model, inputs)
                losses = stepper.loss_fn(outputs, targets, reduction="none")
            stepper.scaler.check_losses(losses)
            self._keep_outputs(outputs, indices)
            return losses.detach()
        stepper.model.zero_grad(set_to_none=True)
        with stepper._passes_context():
            with stepper.pass_context():
                outputs = stepper.forward(stepper.model, inputs)
                if per_example:
                    losses = stepper.loss_fn(outputs, targets, reduction="none")
                    loss = losses.mean()
                else:
                    loss = stepper.loss_fn(outputs, targets)
            stepper.scaler.backward(loss, stepper.params)
        self._keep_outputs(outputs, indices)
        return losses.detach() if per_example else loss.detach()

    def _keep_outputs(self, outputs: Tensor, indices: Tensor | None) -> None:
        """Keep each row's outputs from the first call that saw it (what the trainer's accuracy
        counts). Copies, not views: under CUDA graphs (compile_mode=reduce-overhead) the next pass
        replays the graph into the same output memory."""
        if self._outputs is not None and self._seen is None:
            return                                           # a call on every row came first
        if indices is None and self._outputs is None:
            self._outputs = outputs.detach().clone()
            return
        if self._outputs is None:
            self._outputs = outputs.new_zeros((self.batch_size, *outputs.shape[1:]))
            self._seen = torch.zeros(self.batch_size, dtype=torch.bool, device=outputs.device)
        positions = torch.arange(self.batch_size, device=outputs.device) if indices is None \
            else indices.to(outputs.device)
        new = ~self._seen[positions]
        self._outputs[positions[new]] = outputs.detach()[new]
        self._seen[positions] = True

    def first_outputs(self) -> Tensor:
        """Every row's outputs from the first pass that saw it."""
        if self._outputs is None:
            raise RuntimeError("the optimizer's step took no pass")
        return self._outputs
