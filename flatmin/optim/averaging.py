"""Weight averaging over any optimizer of the contract: an exponential moving average (EMA) or the
stochastic weight average (SWA, Izmailov et al., UAI 2018) of the parameters after each step.

    t = base steps taken (steps whose base step ran)
    after step t: if t > start and (t − start) % every == 0:
        first time: A ← θ (and the buffers, EMA); n = 1
        ema:  A ← lerp(A, θ, 1 − decay)      torch.optim.swa_utils.get_ema_multi_avg_fn(decay)
        swa:  A ← lerp(A, θ, 1/(n + 1))      torch.optim.swa_utils.get_swa_multi_avg_fn(); n += 1

The averages are torch's own functions (``docs/optimizers.md``, "Weight averaging: SWA and EMA"), applied as
``AveragedModel(use_buffers=False)`` does: parameters grouped by device and dtype. EMA given the
model's ``buffers`` averages the floating ones with the same decay and copies the integer ones
(``num_batches_tracked``), as timm's ``ModelEmaV3`` averages "everything in the model state_dict".
SWA leaves the buffers alone: recompute BatchNorm statistics for the average with
``torch.optim.swa_utils.update_bn`` inside :meth:`WeightAveraging.evaluation_weights` (the trainer
does). The training trajectory is never changed. Cost: the wrapped optimizer's passes; 1 extra
parameter-sized buffer (A, state), plus a backup of θ while inside ``evaluation_weights()``.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from typing import Any, Callable, Iterable

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.swa_utils import get_ema_multi_avg_fn, get_swa_multi_avg_fn

from flatmin.optim.hyper import Card
from flatmin.optim.wrapper import OptimizerWrapper, swapped_in

#: The kinds of average, and what :meth:`WeightAveraging.evaluation_weights` then evaluates.
KINDS = {"ema": "the EMA average", "swa": "the SWA average"}


class WeightAveraging(OptimizerWrapper):
    """An EMA or SWA of the parameters of ``optimizer`` (a base optimizer, a multi-pass method or
    Lookahead, whose fast weights it then averages), updated after every ``every``-th base step
    past ``start``; :meth:`evaluation_weights` puts the average in the model.

    Like :class:`~flatmin.optim.Lookahead` it shares the wrapped optimizer's param groups and keeps
    its ``base_step_gate``, so only steps whose base step ran count (an fp16 overflow, an unfinished
    gradient accumulation do not). ``buffers``: the model's buffers (``model.buffers()``): EMA
    averages the floating ones and copies the integer ones; both kinds back them up and restore
    them around :meth:`evaluation_weights`, so statistics recomputed inside (SWA) do not leak into
    training. ``state_dict`` carries A, n, t and the wrapped optimizer's state.

    Sources: ``torch.optim.swa_utils`` (``AveragedModel``, ``get_ema_multi_avg_fn``,
    ``get_swa_multi_avg_fn``, ``update_bn``, ``SWALR``); timm's ``ModelEmaV3`` (buffers); Izmailov,
    Podoprikhin, Garipov, Vetrov & Wilson, "Averaging Weights Leads to Wider Optima and Better
    Generalization", UAI 2018.
    """

    card = Card("Weight averaging (SWA, EMA)", "the wrapped one's", "+1 (the average A)",
                "Izmailov et al., UAI 2018; torch.optim.swa_utils; timm ModelEmaV3")

    def __init__(self, optimizer: Optimizer, kind: str = "ema", decay: float = 0.999, start: int = 0, every: int = 1,
                 buffers: Iterable[Tensor] = ()) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be ema or swa, got {kind!r}")
        if not 0 <= decay <= 1:
            raise ValueError(f"decay must be in [0, 1], got {decay}")
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ValueError(f"start must be a non-negative integer (base steps), got {start!r}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive integer (base steps), got {every!r}")
        super().__init__(optimizer)        # base_steps: t
        self.kind, self.decay, self.start, self.every = kind, decay, start, every
        self.model_buffers = list(buffers)
        self.buffer_averages: list[Tensor] = []
        self.averaged = 0                  # n
        self._average: Callable[[list[Tensor], list[Tensor], int], None] = \
            get_ema_multi_avg_fn(decay) if kind == "ema" else get_swa_multi_avg_fn()

    @property
    def evaluated(self) -> str | None:  # type: ignore[override]
        """"the EMA average" / "the SWA average" once there is one; None (the training weights) before."""
        return KINDS[self.kind] if self.averaged else None

    @property
    def needs_batchnorm_update(self) -> bool:
        """Whether BatchNorm statistics must be recomputed for the evaluation weights (SWA, once averaging)."""
        return self.kind == "swa" and self.averaged > 0

    def after_base_step(self) -> None:
        """The average's update, when due: after base step t > start with (t − start) % every = 0."""
        if self.base_steps > self.start and (self.base_steps - self.start) % self.every == 0:
            self._update()

    def _params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def _update(self) -> None:
        """A ← θ the first time, else torch's average; EMA also over the buffers (integer ones copied)."""
        params = self._params()
        if self.averaged == 0:
            for param in params:
                self.state[param]["average"] = param.detach().clone(memory_format=torch.preserve_format)
            if self.kind == "ema":
                self.buffer_averages = [buffer.detach().clone() for buffer in self.model_buffers]
        else:
            for averages, current in _by_device_and_dtype([self.state[p]["average"] for p in params], params):
                self._average(averages, current, self.averaged)
            if self.kind == "ema":
                floating = [(a, b) for a, b in zip(self.buffer_averages, self.model_buffers) if b.is_floating_point()]
                for averages, current in _by_device_and_dtype([a for a, _ in floating], [b for _, b in floating]):
                    self._average(averages, current, self.averaged)
                for average, buffer in zip(self.buffer_averages, self.model_buffers):
                    if not buffer.is_floating_point():
                        average.copy_(buffer)
        self.averaged += 1

    def evaluation_weights(self) -> contextlib.AbstractContextManager[None]:
        """The average A in the parameters (EMA: the buffers' averages in the buffers; SWA: the buffers
        kept as they are, for ``update_bn`` to recompute inside); the training weights and buffers
        back bit for bit on exit, even after an exception. Before the first update, nothing changes.
        A wrapper's context is its own: the wrapped one's is not used."""
        if not self.averaged:
            return contextlib.nullcontext()
        params = self._params()
        averages = [self.state[p]["average"] for p in params]
        buffers = self.buffer_averages if self.kind == "ema" else self.model_buffers
        return swapped_in([*params, *self.model_buffers], [*averages, *buffers])

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "averaged": self.averaged,
                "buffer_averages": [average.clone() for average in self.buffer_averages]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.averaged = state_dict["averaged"]
        saved = state_dict["buffer_averages"]
        if saved and len(saved) != len(self.model_buffers):
            raise ValueError(f"the checkpoint averages {len(saved)} buffers, this model has {len(self.model_buffers)}")
        self.buffer_averages = [average.to(device=buffer.device, dtype=buffer.dtype).clone()
                                for average, buffer in zip(saved, self.model_buffers)]


def _by_device_and_dtype(averages: list[Tensor], current: list[Tensor]) -> list[tuple[list[Tensor], list[Tensor]]]:
    """Pairs of lists (averages, current tensors) of one device and dtype each, for torch's foreach averages
    (``AveragedModel`` groups them so too)."""
    groups: dict[tuple[torch.device, torch.dtype], tuple[list[Tensor], list[Tensor]]] = defaultdict(lambda: ([], []))
    for average, tensor in zip(averages, current):
        group = groups[(average.device, average.dtype)]
        group[0].append(average)
        group[1].append(tensor.detach())
    return list(groups.values())
