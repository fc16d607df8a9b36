"""A plain Hugging Face Accelerate loop: :func:`accelerated_stepper`.

```python
model, optimizer, loader = accelerator.prepare(model, build_optimizer("esam", model), loader)
stepper = accelerated_stepper(accelerator, model, optimizer, loss_fn, accumulate=2, grad_clip_norm=1.0)
for inputs, targets in loader:
    loss, outputs, ended = stepper.step(inputs, targets)
```

What it takes from the host: the optimizer under accelerate's ``AcceleratedOptimizer`` (whose own
``step`` would step once, without the closure, and count accumulation its own way); the device;
the precision (``mixed_precision``; the prepared model's forward already runs in accelerate's
autocast) and, under fp16, the settings of accelerate's ``GradScaler`` (scale, growth and backoff
factors, growth interval), which become flatmin's ``LossScaler``: torch's scaler allows one
``unscale_`` per step and refuses ``step(optimizer, closure)`` (``torch/amp/grad_scaler.py``); DDP
from the prepared model (``DistributedDataParallel``). DeepSpeed and FSDP are refused: flatmin's
average of G assumes parameters replicated on every process.
"""

from __future__ import annotations

from typing import Any, Callable

import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer

from flatmin.runtime import Runtime
from flatmin.runtime.precision import LossScaler, Precision
from flatmin.step import Stepper

#: accelerate's ``mixed_precision`` → flatmin's precision.
PRECISION_OF = {"no": "fp32", "fp16": "fp16", "bf16": "bf16"}
#: accelerate's distributed types flatmin's step rules do not hold under.
REFUSED = ("DEEPSPEED", "FSDP", "MEGATRON_LM")


def accelerated_stepper(accelerator: Any, model: nn.Module, optimizer: Optimizer,
                        loss_fn: Callable[..., Tensor] = F.cross_entropy, accumulate: int = 1,
                        grad_clip_norm: float | None = None, **host: Any) -> Stepper:
    """The :class:`Stepper` that steps ``optimizer`` (as ``accelerator.prepare`` returned it) on
    ``model`` (prepared) the way flatmin's trainer does, in the accelerator's precision. ``host``: the
    Stepper's other keyword arguments (``forward``, for a transformers model)."""
    refuse_sharding(accelerator, "accelerated_stepper")
    if accelerator.mixed_precision not in PRECISION_OF:
        raise TypeError(f"accelerated_stepper: mixed_precision={accelerator.mixed_precision!r} is not one of "
                        f"{', '.join(PRECISION_OF)}.")
    inner = getattr(optimizer, "optimizer", optimizer)             # under AcceleratedOptimizer
    # On a CPU accelerate keeps mixed_precision="fp16" but runs fp32 (native_amp off, no scaler):
    # the passes run as its forward does.
    name = PRECISION_OF[accelerator.mixed_precision] if accelerator.native_amp else "fp32"
    precision = Precision(name, accelerator.device)
    return Stepper(model, inner, Runtime(accelerator.device, precision), loss_fn, accumulate, grad_clip_norm,
                   scaler=scaler_like(accelerator.scaler, precision), **host)


def refuse_sharding(accelerator: Any, host: str) -> None:
    """A ``TypeError`` naming ``host`` under an accelerator whose parameters are not replicated."""
    kind = str(getattr(accelerator.distributed_type, "name", accelerator.distributed_type))
    if kind in REFUSED:
        raise TypeError(f"{host} does not run under {kind}: flatmin's methods average G over replicated "
                        "parameters (DDP or one process).")


def scaler_like(host: Any, precision: Precision) -> LossScaler:
    """flatmin's loss scaler with a host ``GradScaler``'s settings (None: the precision's own)."""
    if host is None or not host.is_enabled():
        return precision.loss_scaler()
    return LossScaler(precision.device, True, init_scale=host.get_scale(), growth_factor=host.get_growth_factor(),
                      backoff_factor=host.get_backoff_factor(), growth_interval=host.get_growth_interval())
