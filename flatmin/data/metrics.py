"""How a split's predictions are scored, computed locally: the metrics a :class:`~flatmin.data.task.Task`
names. They are the GLUE paper's (Wang et al., ICLR 2019), computed with scikit-learn and scipy on
the predictions gathered over a split, never fetched at run time:

========== ==========================================================
accuracy   fraction of correct predictions
f1         F1 of the positive class (MRPC, QQP)
mcc        Matthews correlation coefficient (CoLA)
pearson    Pearson correlation of predictions and targets (STS-B)
spearman   Spearman rank correlation (STS-B)
========== ==========================================================
"""

from __future__ import annotations

from typing import Callable

import numpy as np


# scikit-learn and scipy are imported by the metrics that use them, when first scored: importing them
# costs a second at start-up, which a run scoring accuracy alone need not pay.
def f1(predictions: np.ndarray, targets: np.ndarray) -> float:
    from sklearn.metrics import f1_score
    return float(f1_score(targets, predictions, zero_division=0.0))


def mcc(predictions: np.ndarray, targets: np.ndarray) -> float:
    from sklearn.metrics import matthews_corrcoef
    return float(matthews_corrcoef(targets, predictions))


def pearson(predictions: np.ndarray, targets: np.ndarray) -> float:
    from scipy.stats import pearsonr
    return float(pearsonr(predictions, targets).statistic)


def spearman(predictions: np.ndarray, targets: np.ndarray) -> float:
    from scipy.stats import spearmanr
    return float(spearmanr(predictions, targets).statistic)


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": lambda predictions, targets: float(np.mean(predictions == targets)),
    "f1": f1, "mcc": mcc, "pearson": pearson, "spearman": spearman,
}


#: The range each metric (and the loss) takes: the report keeps its intervals inside it.
RANGES: dict[str, tuple[float, float]] = {"accuracy": (0.0, 1.0), "f1": (0.0, 1.0), "mcc": (-1.0, 1.0),
                                          "pearson": (-1.0, 1.0), "spearman": (-1.0, 1.0), "loss": (0.0, float("inf"))}
