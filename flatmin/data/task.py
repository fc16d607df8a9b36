"""What a dataset asks the model to predict: its :class:`Task`, which owns the training loss (with
label smoothing), the evaluation loss, the predictions and the scores.

A :class:`Task` is built from the dataset config (``dataset.task``, ``dataset.metrics``):
classification (argmax of the logits, cross-entropy) or regression (one output, mean squared
error: STS-B), scored by the metrics of ``metrics.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor

from flatmin.data.metrics import METRICS


#: The two forms of label smoothing ``trainer.label_smoothing_form`` offers.
SMOOTHING_FORMS = ("torch", "released")


def smoothed_cross_entropy(smoothing: float, form: str = "torch") -> Callable[[Tensor, Tensor], Tensor]:
    """Cross-entropy against smoothed targets, in one of two forms (``C`` classes, ``s`` the smoothing):

    * ``torch`` (Szegedy et al., 2016, as ``torch.nn.CrossEntropyLoss``): ``s/C`` on every class,
      so the right class gets ``1 − s + s/C``;
    * ``released``: ``1 − s`` on the right class and ``s/(C−1)`` on each wrong one, as the released
      training scripts of SAM's PyTorch reference (davda54/sam ``example/utility/loss.py``,
      ``smooth_crossentropy``) and of GAM do. It is the ``torch`` form with ``s·C/(C−1)``, which is
      how it is computed here.

    The function takes ``reduction`` (``mean``, or ``none`` for the per-example losses the extended
    closure gives, ``flatmin/step.py``).
    """
    if form not in SMOOTHING_FORMS:
        raise ValueError(f"label smoothing form must be one of {', '.join(SMOOTHING_FORMS)}, got {form!r}")
    if form == "torch" or smoothing == 0:
        return partial(F.cross_entropy, label_smoothing=smoothing)

    def released(outputs: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
        classes = outputs.shape[-1]
        return F.cross_entropy(outputs, targets, label_smoothing=smoothing * classes / (classes - 1),
                               reduction=reduction)

    return released


def squeezed_mse(outputs: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
    """Mean squared error of a single-output model's (N, 1) outputs against (N,) targets."""
    return F.mse_loss(outputs.squeeze(-1), targets, reduction=reduction)


@dataclass(frozen=True)
class Task:
    """Classification (``regression=False``) or single-output regression, scored by ``metrics``."""

    regression: bool
    metrics: tuple[str, ...]

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "Task":
        """The task of the ``dataset`` config: ``task`` (classification | regression) and ``metrics``."""
        return cls(regression=cfg.task == "regression", metrics=tuple(cfg.metrics))

    def loss_fn(self, label_smoothing: float = 0.0, form: str = "torch") -> Callable[[Tensor, Tensor], Tensor]:
        """The training loss (label smoothing applies to classification only; see
        :func:`smoothed_cross_entropy` for its two forms)."""
        if self.regression:
            return squeezed_mse
        return smoothed_cross_entropy(label_smoothing, form)

    def summed_loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """The evaluation loss summed over the batch, in fp32 and without label smoothing."""
        loss = squeezed_mse if self.regression else F.cross_entropy
        return loss(outputs.float(), targets, reduction="sum")

    def count_correct(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Correct predictions in a batch, as a tensor (no host sync); 0 for regression."""
        if self.regression:
            return outputs.new_zeros((), dtype=torch.long)
        return (outputs.argmax(1) == targets).sum()

    def predict(self, outputs: Tensor) -> Tensor:
        """Predicted classes, or predicted values for regression."""
        return outputs.float().squeeze(-1) if self.regression else outputs.argmax(1)

    def score(self, predictions: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        """Every metric of the task on a whole split's predictions and targets."""
        return {name: METRICS[name](predictions, targets) for name in self.metrics}


#: The task of every image dataset: classes scored by accuracy.
CLASSIFICATION = Task(regression=False, metrics=("accuracy",))
