"""A Hugging Face ``transformers.Trainer`` that steps flatmin's optimizers: :class:`FlatminTrainer`.

```python
trainer = FlatminTrainer(model=model, args=TrainingArguments(..., gradient_accumulation_steps=2, max_grad_norm=1.0),
                         train_dataset=train, eval_dataset=val,
                         optimizers=(build_optimizer("sam", model, lr=2e-5), None))
trainer.train()
```

The Trainer's loop (``transformers/trainer.py``, ``_run_epoch``) backpropagates each micro-batch in
``training_step`` and, at the end of a group of ``gradient_accumulation_steps`` micro-batches, clips
(``_clip_grad_norm``), calls ``optimizer.step()`` without a closure, steps the scheduler unless
accelerate's ``GradScaler`` skipped the step, and zeroes the gradients. A multi-pass method needs its
closure and the step rules of :class:`~flatmin.step.Stepper`, so ``training_step`` runs the micro-batch
through the Stepper that :func:`~flatmin.integrations.accelerate.accelerated_stepper` builds on the
Trainer's accelerator: every pass and, at the group's end, the gate and the base step. What it maps
from the host:

* the batch: a dict whose label column (``label_names``, default ``labels``) is the targets of
  ``loss_fn`` and whose other columns go ``model(**inputs)``; the logits are read from the output
  object. Evaluation reports the same ``loss_fn``;
* accumulation: the group's size is the Trainer's ``current_gradient_accumulation_steps`` (an epoch's
  last group may be shorter); ``training_step`` returns the loss divided by it, as the Trainer sums;
* clipping: ``max_grad_norm > 0`` clips the final G in the gate, before the base step; the Trainer's
  ``_clip_grad_norm`` would come after it, and does nothing here;
* the step: each ``training_step`` ends with accelerate's ``sync_gradients`` off, under which
  ``AcceleratedOptimizer.step`` and ``zero_grad`` do nothing (``accelerate/optimizer.py``), so the
  Trainer's ``optimizer.step()`` neither steps the method again, without its closure, nor runs torch's
  ``GradScaler``; that scaler never reports a skipped step, so the Trainer's scheduler advances once per
  optimizer step, after an fp16 overflow skip too, as flatmin's trainer's does;
* precision (``accelerate/accelerator.py``): the prepared model's forward runs in accelerate's autocast;
  under fp16 the settings of its ``GradScaler`` make flatmin's ``LossScaler`` (torch's scaler allows
  one ``unscale_`` per step); ``accelerator.backward`` is not used;
* DDP: the Trainer's ``accelerator.no_sync`` around a group's first micro-batches nests with the
  Stepper's ``no_sync`` around every pass; the Stepper averages G across replicas once;
* ``evaluate`` and ``predict`` run inside the optimizer's ``evaluation_weights`` (Lookahead's slow
  weights, an average); the training weights are back afterwards;
* checkpoints: the Trainer saves ``optimizer.pt`` from the flatmin optimizer's ``state_dict``; the
  Stepper's counts and loss scale go beside it (:data:`STEPPER_NAME`) and come back on resume.

DeepSpeed and FSDP are refused when the trainer is made: flatmin's average of G assumes parameters
replicated on every process.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import torch
import torch.nn.functional as F
from accelerate.optimizer import AcceleratedOptimizer
from torch import Tensor, nn
from torch.optim import Optimizer
from transformers import Trainer

from flatmin.integrations.accelerate import accelerated_stepper, refuse_sharding
from flatmin.optim import global_norm
from flatmin.optim.multipass import evaluation_weights
from flatmin.step import Stepper

#: The Stepper's state in a checkpoint folder, beside the Trainer's ``optimizer.pt``.
STEPPER_NAME = "flatmin_stepper.pt"


def logits_of(outputs: Any) -> Tensor:
    """The logits in a model's outputs: a ``ModelOutput``'s ``logits``, a tuple's first element."""
    return outputs[0] if isinstance(outputs, tuple) else outputs.logits


def forward_logits(model: nn.Module, inputs: dict[str, Any]) -> Tensor:
    """How a pass reaches a transformers model: ``model(**inputs)``, and the logits it returns."""
    return logits_of(model(**inputs))


class FlatminTrainer(Trainer):
    """A ``transformers.Trainer`` whose optimizer (``optimizers=(flatmin_optimizer, scheduler)``) is
    stepped by flatmin's :class:`~flatmin.step.Stepper`; ``loss_fn(logits, labels, reduction="mean")``
    is the training and evaluation loss (cross-entropy by default; it must take ``reduction="none"``,
    which ESAM's and bSAM's closure calls use). ``stepper`` is built at the first training step."""

    def __init__(self, *args: Any, loss_fn: Callable[..., Tensor] = F.cross_entropy, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        refuse_sharding(self.accelerator, "FlatminTrainer")
        self.label_names = self.label_names or ["labels"]        # a model whose forward takes no labels
        if len(self.label_names) != 1:
            raise TypeError(f"FlatminTrainer takes one label column, the loss's targets (got label_names="
                            f"{self.label_names}).")
        self.loss_fn = loss_fn
        self.stepper: Stepper | None = None
        self._resumed_stepper_state: dict[str, Any] | None = None

    @property
    def flatmin_optimizer(self) -> Optimizer | None:
        """The optimizer given, also once training has put it under accelerate's wrapper."""
        if isinstance(self.optimizer, AcceleratedOptimizer):
            return self.optimizer.optimizer
        return self.optimizer

    def _split(self, inputs: dict[str, Any]) -> tuple[dict[str, Any], Tensor]:
        """The model's inputs and the targets of a batch (a new dict: the Trainer reads the batch after the step)."""
        label = self.label_names[0]
        return {name: value for name, value in inputs.items() if name != label}, inputs[label]

    def _stepper_for(self, model: nn.Module) -> Stepper:
        """The Stepper on ``model`` (the prepared one, DDP-wrapped across replicas); a later ``train``
        that prepares the model anew gets a new one, which keeps the counts and the loss scale."""
        if self.stepper is None or self.stepper.model is not model:
            max_norm = self.args.max_grad_norm
            stepper = accelerated_stepper(self.accelerator, model, self.optimizer, self.loss_fn,
                                          self.args.gradient_accumulation_steps, max_norm if max_norm > 0 else None,
                                          forward=forward_logits)
            if self.stepper is not None:
                stepper.load_state_dict(self.stepper.state_dict())
            self.stepper = stepper
        if self._resumed_stepper_state is not None:
            self.stepper.load_state_dict(self._resumed_stepper_state)
            self._resumed_stepper_state = None
        return self.stepper

    # transformers/trainer.py: backward of one micro-batch, the step left to optimizer.step() at the sync point.
    def training_step(self, model: nn.Module, inputs: dict[str, Any],
                      num_items_in_batch: Tensor | int | None = None) -> Tensor:
        """One micro-batch through the Stepper (every pass; at the group's end the gate and the base
        step); its loss divided by the group's size, which the Trainer sums over the group. The loss
        is each micro-batch's mean (flatmin's G is the mean of the micro-batches'), so
        ``num_items_in_batch`` is not used."""
        model.train()
        stepper = self._stepper_for(model)
        group_size = self.current_gradient_accumulation_steps
        loss, _, _ = stepper.step(*self._split(self._prepare_inputs(inputs)), group_size=group_size)
        # The step is taken: the Trainer's optimizer.step() and zero_grad() at the sync point
        # (transformers/trainer.py _run_epoch) do nothing while sync_gradients is off (accelerate/optimizer.py).
        self.accelerator.sync_gradients = False
        return loss / group_size

    # transformers/trainer.py: the model's own loss; evaluation reports loss_fn's, as training takes it.
    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Tensor | int | None = None) -> Tensor | tuple[Tensor, Any]:
        """``loss_fn``'s mean loss on a batch, and the model's outputs when asked."""
        features, targets = self._split(inputs)
        outputs = model(**features)
        loss = self.loss_fn(logits_of(outputs), targets)
        return (loss, outputs) if return_outputs else loss

    # transformers/trainer.py clips after training_step, when the base step is taken; the Stepper clipped G before it.
    def _clip_grad_norm(self, model: nn.Module) -> None:
        return None                         # no norm yet: the Trainer then asks _get_grad_norm

    # transformers/trainer.py measures through accelerator.clip_grad_norm_, which under fp16 unscales the gradients
    # again with accelerate's GradScaler (accelerate/accelerator.py); the Stepper's scaler has unscaled them.
    def _get_grad_norm(self, model: nn.Module, grad_norm: Tensor | None = None) -> Tensor | None:
        """The norm of G as the base step took it (after clipping), for the Trainer's log."""
        grads = [p.grad for p in self.stepper.params if p.grad is not None]
        return global_norm(grads) if grads else None

    # transformers/trainer.py evaluates the parameters as they are: the training weights.
    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        with evaluation_weights(self.flatmin_optimizer):
            return super().evaluate(*args, **kwargs)

    # transformers/trainer.py predicts with the parameters as they are: the training weights.
    def predict(self, *args: Any, **kwargs: Any) -> Any:
        with evaluation_weights(self.flatmin_optimizer):
            return super().predict(*args, **kwargs)

    # transformers/trainer.py saves the optimizer's state_dict; the Stepper's counts and loss scale go beside it.
    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        super()._save_optimizer_and_scheduler(output_dir)
        if self.args.should_save and self.stepper is not None:
            torch.save(self.stepper.state_dict(), os.path.join(output_dir, STEPPER_NAME))

    # transformers/trainer.py restores the optimizer on resume; the Stepper's state waits for its first training step.
    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None and os.path.isfile(os.path.join(checkpoint, STEPPER_NAME)):
            self._resumed_stepper_state = torch.load(os.path.join(checkpoint, STEPPER_NAME), weights_only=True)
