"""A model small enough for the exact Hessian (624 parameters, with BatchNorm), trained near a minimum."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset


class TinyNet(nn.Module):
    """Conv (no bias) → BatchNorm → ReLU → flatten → linear head, for 8x8 images of 4 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4 * 6 * 6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.bn(self.conv(x))).flatten(1))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The sharpness tests run thousands of tiny products, where a second thread only adds overhead."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained_tiny(one_thread) -> tuple[TinyNet, TensorDataset]:
    """TinyNet after 100 full-batch Adam steps on 96 separable random 8x8 images of 4 classes (the
    Hessian is then nearly positive semi-definite, as at the end of training)."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (96,), generator=generator)
    images = torch.randn(96, 1, 8, 8, generator=generator) + 0.3 * labels.view(-1, 1, 1, 1)
    torch.manual_seed(0)
    model = TinyNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(100):
        optimizer.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
    model.zero_grad(set_to_none=True)
    return model, TensorDataset(images, labels)
