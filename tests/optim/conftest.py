import pytest
import torch


@pytest.fixture(autouse=True)
def float64_default():
    """The optimizer checks run in float64 (docs/optimizers.md); the default dtype is restored after."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
