"""BERT-family sequence classifiers from transformers (Devlin et al., NAACL 2019), hub or local folder.

``AutoModelForSequenceClassification`` puts a new linear head of ``num_labels`` outputs on the
pretrained encoder (``num_labels=1`` is a regression head: STS-B). :class:`SequenceClassifier`
takes the tokenised batch as one dict and returns the logits, so the trainer drives it like any
other model: ``outputs = model(inputs)``.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModelForSequenceClassification

from flatmin.pretrained import load_pretrained


class SequenceClassifier(nn.Module):
    """A transformers sequence classifier whose ``forward(inputs)`` returns logits (N, num_labels)."""

    def __init__(self, name_or_path: str, num_labels: int) -> None:
        super().__init__()
        self.model = load_pretrained(
            lambda: AutoModelForSequenceClassification.from_pretrained(name_or_path, num_labels=num_labels),
            f"The pretrained model {name_or_path}", name_or_path, "model.name_or_path")

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(**inputs).logits
