"""The task metrics against their definitions, and the classification/regression losses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flatmin.data.metrics import METRICS
from flatmin.data.task import Task, smoothed_cross_entropy


def test_metrics_match_their_definitions():
    targets = np.array([1, 1, 0, 0, 1, 0, 1, 1])
    predictions = np.array([1, 0, 0, 1, 1, 0, 1, 1])
    tp, fp, fn, tn = 4, 1, 1, 2
    assert METRICS["accuracy"](predictions, targets) == 6 / 8
    assert METRICS["f1"](predictions, targets) == pytest.approx(2 * tp / (2 * tp + fp + fn))
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert METRICS["mcc"](predictions, targets) == pytest.approx(mcc)
    scores = np.array([0.1, 2.0, 3.5, 4.0])
    assert METRICS["pearson"](2 * scores + 1, scores) == pytest.approx(1.0)
    assert METRICS["spearman"](scores ** 3, scores) == pytest.approx(1.0)
    assert METRICS["pearson"](scores ** 3, scores) < 1.0


def test_a_task_names_its_metrics_and_picks_its_loss():
    classification = Task(regression=False, metrics=("f1", "accuracy"))
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    targets = torch.tensor([0, 1, 0])
    assert classification.predict(logits).tolist() == [0, 1, 1]
    assert classification.count_correct(logits, targets).item() == 2
    assert set(classification.score(np.array([0, 1, 1]), targets.numpy())) == {"f1", "accuracy"}
    assert classification.summed_loss(logits, targets) == pytest.approx(
        3 * torch.nn.functional.cross_entropy(logits, targets))

    regression = Task(regression=True, metrics=("pearson", "spearman"))
    outputs, scores = torch.tensor([[1.0], [2.0], [4.0]]), torch.tensor([1.5, 2.0, 3.0])
    assert regression.predict(outputs).tolist() == [1.0, 2.0, 4.0]
    assert regression.loss_fn(label_smoothing=0.1)(outputs, scores) == pytest.approx((0.25 + 0 + 1) / 3)
    assert regression.summed_loss(outputs, scores) == pytest.approx(1.25)
    assert regression.count_correct(outputs, scores).item() == 0


@pytest.mark.parametrize("classes", [2, 10, 100])
def test_the_released_label_smoothing_form_is_its_formula(classes: int):
    """davda54/sam's and GAM's form: 1 − s on the right class, s/(C−1) on each wrong one."""
    generator = torch.Generator().manual_seed(0)
    outputs = torch.randn(8, classes, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, classes, (8,), generator=generator)
    smoothing = 0.1
    soft = torch.full((8, classes), smoothing / (classes - 1), dtype=torch.float64)
    soft[torch.arange(8), targets] = 1 - smoothing
    expected = -(soft * torch.log_softmax(outputs, 1)).sum(1).mean()
    assert torch.allclose(smoothed_cross_entropy(smoothing, "released")(outputs, targets), expected, rtol=1e-14)
    torch_form = -((1 - smoothing) * torch.nn.functional.one_hot(targets, classes).double() + smoothing / classes
                   ) * torch.log_softmax(outputs, 1)
    assert torch.allclose(smoothed_cross_entropy(smoothing, "torch")(outputs, targets), torch_form.sum(1).mean(),
                          rtol=1e-14)
    assert Task(regression=False, metrics=("accuracy",)).loss_fn(smoothing, "released")(outputs, targets) == \
        smoothed_cross_entropy(smoothing, "released")(outputs, targets)
