"""Lightning: :class:`FlatminMixin` steps a flatmin method inside a ``LightningModule``.

```python
class Net(FlatminMixin, L.LightningModule):
    def __init__(self):
        super().__init__()
        self.model = make_model()
        self.flatmin_accumulate = 2          # micro-batches per optimizer step (default 1)
        self.flatmin_grad_clip_norm = 1.0    # clip the final G (default None)

    def forward(self, x):
        return self.model(x)

    def configure_optimizers(self):
        return build_optimizer("sam", self, rho=0.05)
```

The mixin turns Lightning's automatic optimisation off and steps through flatmin's
:class:`~flatmin.step.Stepper`, never through ``LightningOptimizer.step(closure)``: Lightning's
precision plugin wraps the closure in ``partial(_wrap_closure, …)``, which takes no keywords (the
extended closure is lost) and runs ``on_before_optimizer_step`` after every pass
(``lightning/pytorch/plugins/precision/precision.py``); its AMP plugin runs the closure once,
unscales once and then steps without the closure (``plugins/precision/amp.py``). What it maps from
the host:

* every pass runs in the precision plugin's ``forward_context()`` (fp16, bf16 and 64-bit autocast);
  under fp16 the plugin's ``GradScaler`` settings make flatmin's loss scaler (torch's scaler allows
  one ``unscale_`` per step);
* DDP: flatmin's own backward, not ``manual_backward`` (whose ``DDPStrategy.pre_backward`` arms DDP's
  reducer: one all-reduce per pass), every pass inside ``strategy.block_backward_sync()`` (DDP's
  ``no_sync``, in case anything else arms it), and ``G`` averaged once over the replicas;
* accumulation and clipping are the mixin's (``flatmin_accumulate``, ``flatmin_grad_clip_norm``):
  Lightning refuses ``accumulate_grad_batches`` and ``gradient_clip_val`` under manual optimisation
  (``trainer/configuration_validator.py``); an epoch's last group is shortened to the batches left;
* ``trainer.global_step`` counts optimizer steps (taken, or skipped for an fp16 overflow), through
  the manual loop's own step hooks (``loops/optimization/manual.py``); the schedulers of
  ``configure_optimizers``, which Lightning does not step under manual optimisation, are stepped
  once per ended step (``interval: "step"``) or per epoch, every ``frequency``. A ``ReduceLROnPlateau``
  is refused: under manual optimisation Lightning drops its ``monitor`` (``core/optimizer.py``,
  ``_configure_schedulers_manual_opt``), so nothing would say which metric steps it;
* validation, test and predict epochs run inside ``evaluation_weights`` (Lookahead's slow weights,
  an average); the training weights are back before ``ModelCheckpoint`` saves (``on_validation_end``);
* the Stepper's state (counters, loss scale) is saved and restored with the module's checkpoint.

A hook the mixin defines and a module overrides (``on_validation_epoch_start``, ``on_save_checkpoint``
…) calls ``super()``. Neither ``lightning`` nor ``pytorch_lightning`` is imported here: the mixin works
under either name.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch.nn.functional as F
from torch import Tensor
from torch.optim.lr_scheduler import ReduceLROnPlateau

from flatmin.integrations.accelerate import scaler_like
from flatmin.optim.multipass import evaluation_weights
from flatmin.runtime import Runtime
from flatmin.runtime.precision import Precision
from flatmin.step import Stepper, group_size

#: Lightning strategies whose parameters are not replicated on every process: flatmin's average of G
#: across replicas would be wrong under them.
SHARDED_STRATEGIES = ("FSDPStrategy", "DeepSpeedStrategy", "ModelParallelStrategy")


class FlatminMixin:
    """Put first among a ``LightningModule``'s bases: its ``training_step`` is one micro-batch through
    the Stepper (:meth:`flatmin_step`). Settings: ``flatmin_accumulate``, ``flatmin_grad_clip_norm``;
    hooks: :meth:`flatmin_batch`, :meth:`flatmin_loss`."""

    flatmin_accumulate: int = 1
    flatmin_grad_clip_norm: float | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.automatic_optimization = False
        self.flatmin_stepper: Stepper | None = None
        self._flatmin_restored: dict[str, Any] | None = None
        self._flatmin_evaluation = contextlib.ExitStack()

    # ---- what a module may override ----------------------------------------------------------

    def flatmin_batch(self, batch: Any) -> tuple[Any, Tensor]:
        """A batch's inputs and targets (default: ``batch[0], batch[1]``)."""
        return batch[0], batch[1]

    def flatmin_loss(self, outputs: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
        """The loss of a pass; ``reduction="none"`` gives the per-example losses of the extended closure."""
        return F.cross_entropy(outputs, targets, reduction=reduction)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self.flatmin_step(batch, batch_idx)

    # ---- the step -----------------------------------------------------------------------------

    def flatmin_step(self, batch: Any, batch_idx: int) -> Tensor:
        """One micro-batch through the method (every pass; at a group's end the base step, the step
        count and the step-interval schedulers). Returns the method's loss, logged as ``train/loss``."""
        stepper = self.flatmin_stepper or self._flatmin_build_stepper()
        inputs, targets = self.flatmin_batch(batch)
        loss, _, ended = stepper.step(inputs, targets, group_size=self._flatmin_group_size(batch_idx))
        if ended:
            optimizer = self.optimizers()
            optimizer._on_before_step()          # the manual loop's count of optimizer steps: global_step
            optimizer._on_after_step()
            self._flatmin_step_schedulers("step", self.trainer.global_step)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _flatmin_build_stepper(self) -> Stepper:
        trainer = self.trainer
        strategy = type(trainer.strategy).__name__
        if strategy in SHARDED_STRATEGIES:
            raise TypeError(f"FlatminMixin does not run under {strategy}: flatmin's methods average G over "
                            "replicated parameters (DDP or one process).")
        if len(trainer.optimizers) != 1:
            raise TypeError(f"FlatminMixin steps one optimizer; configure_optimizers gave {len(trainer.optimizers)}.")
        if any(isinstance(config.scheduler, ReduceLROnPlateau) for config in trainer.lr_scheduler_configs):
            raise TypeError("FlatminMixin cannot step a ReduceLROnPlateau: Lightning drops its monitor under manual "
                            "optimisation; step it in a hook of your own (e.g. on_validation_epoch_end) instead.")
        plugin = trainer.precision_plugin
        host_scaler = getattr(plugin, "scaler", None)          # the fp16 plugin's GradScaler
        precision = Precision("fp16" if host_scaler is not None else "fp32", self.device)
        replicas = trainer.world_size
        self.flatmin_stepper = Stepper(
            self, trainer.optimizers[0], Runtime(self.device, precision), self.flatmin_loss,
            self.flatmin_accumulate, self.flatmin_grad_clip_norm, scaler=scaler_like(host_scaler, precision),
            pass_context=plugin.forward_context,
            no_sync=trainer.strategy.block_backward_sync if replicas > 1 else None, replicas=replicas)
        if self._flatmin_restored is not None:
            self.flatmin_stepper.load_state_dict(self._flatmin_restored)
        return self.flatmin_stepper

    def _flatmin_group_size(self, batch_idx: int) -> int:
        """The size of the accumulation group ``batch_idx`` belongs to (an epoch of unknown length:
        ``flatmin_accumulate``)."""
        total = self.trainer.num_training_batches
        if total == float("inf"):
            return self.flatmin_accumulate
        return group_size(batch_idx, self.flatmin_accumulate, int(total))

    def _flatmin_step_schedulers(self, interval: str, count: int) -> None:
        """Step the schedulers of ``configure_optimizers`` with this ``interval`` every ``frequency``."""
        for config in self.trainer.lr_scheduler_configs:
            if config.interval == interval and count % config.frequency == 0:
                config.scheduler.step()

    # ---- Lightning hooks ----------------------------------------------------------------------

    def on_fit_start(self) -> None:
        if self.automatic_optimization:
            raise TypeError("FlatminMixin steps the optimizer itself: leave automatic_optimization False "
                            "(Lightning's automatic step runs a flatmin method's passes through one closure).")
        super().on_fit_start()

    def on_train_epoch_end(self) -> None:
        self._flatmin_step_schedulers("epoch", self.current_epoch + 1)
        super().on_train_epoch_end()

    def _flatmin_enter_evaluation(self) -> None:
        if self.trainer.optimizers:
            self._flatmin_evaluation.enter_context(evaluation_weights(self.trainer.optimizers[0]))

    def on_validation_epoch_start(self) -> None:
        self._flatmin_enter_evaluation()
        super().on_validation_epoch_start()

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self._flatmin_evaluation.close()

    def on_test_epoch_start(self) -> None:
        self._flatmin_enter_evaluation()
        super().on_test_epoch_start()

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        self._flatmin_evaluation.close()

    def on_predict_epoch_start(self) -> None:
        self._flatmin_enter_evaluation()
        super().on_predict_epoch_start()

    def on_predict_epoch_end(self) -> None:
        super().on_predict_epoch_end()
        self._flatmin_evaluation.close()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.flatmin_stepper is not None:
            checkpoint["flatmin_stepper"] = self.flatmin_stepper.state_dict()
        super().on_save_checkpoint(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._flatmin_restored = checkpoint.get("flatmin_stepper")
        if self.flatmin_stepper is not None and self._flatmin_restored is not None:
            self.flatmin_stepper.load_state_dict(self._flatmin_restored)
        super().on_load_checkpoint(checkpoint)
