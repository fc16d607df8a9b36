"""A measurement leaves the model as it found it: every parameter and buffer, every ``.grad`` and every
module's train/eval mode bit for bit as before, also when the measurement fails part-way.

The measures that move the weights (worst-case and average sharpness, loss surfaces, interpolations)
run inside :func:`left_as_found`, which evaluates in eval mode and restores the rest afterwards.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def left_as_found(model: nn.Module) -> Iterator[None]:
    """Eval mode inside; afterwards, on success or exception, every entry of ``model.state_dict()``,
    every parameter's ``.grad`` and every module's mode as they were on entry."""
    modes = [(module, module.training) for module in model.modules()]
    entries = model.state_dict(keep_vars=True)
    saved = {name: tensor.detach().clone() for name, tensor in entries.items()}
    grads = [(parameter, parameter.grad) for parameter in model.parameters()]
    kept = [grad.detach().clone() if grad is not None else None for _, grad in grads]
    model.eval()
    try:
        yield
    finally:
        with torch.no_grad():
            for name, tensor in entries.items():
                tensor.copy_(saved[name])
            for (parameter, grad), value in zip(grads, kept):
                if grad is not None:
                    grad.copy_(value)
                parameter.grad = grad
        for module, training in modes:
            module.train(training)
