"""The measurement protocol: parameter selection, the fixed subset, eval mode, nothing left changed."""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import open_dict
from torch import Tensor, nn
from torch.utils.data import Dataset

from flatmin.errors import ConfigError
from flatmin.models import SmallCNN
from flatmin.sharpness import SharpnessOptions, measure_sharpness, select_parameters
from flatmin.sharpness.measure import fixed_subset_batches
from tests.conftest import make_config

CPU = torch.device("cpu")
QUICK = SharpnessOptions(samples=64, batch_size=32, top_k=2, max_iter=20)


def test_parameter_selections():
    model = SmallCNN(num_classes=10)
    conv_and_head = [name for name, _ in select_parameters(model, "conv_and_head")]
    assert conv_and_head == ["features.0.weight", "features.4.weight", "features.7.weight", "head.weight"]
    assert len(select_parameters(model, "all")) == len(list(model.parameters()))
    assert [name for name, _ in select_parameters(model, r"^head\.")] == ["head.weight", "head.bias"]
    model.head.bias.requires_grad_(False)
    assert [name for name, _ in select_parameters(model, r"^head\.")] == ["head.weight"]
    with pytest.raises(ConfigError, match="trainer.sharpness_params='nothing' selects no trainable parameter of Small"):
        select_parameters(model, "nothing")


def test_options_come_from_the_run_config(tmp_path):
    cfg = make_config(tmp_path, "trainer.sharpness_top_k=3", "trainer.sharpness_params=conv_and_head")
    options = SharpnessOptions.from_config(cfg)
    assert options == SharpnessOptions(batch_size=cfg.dataset.batch_size, top_k=3, params="conv_and_head")
    with open_dict(cfg):
        del cfg.trainer["sharpness_top_k"]  # a run made before the option existed gets the default
    assert SharpnessOptions.from_config(cfg).top_k == SharpnessOptions.top_k


def test_a_measurement_changes_nothing_and_uses_eval_mode(trained_tiny):
    model, dataset = copy.deepcopy(trained_tiny)
    model.train()
    model.head.weight.grad = torch.full_like(model.head.weight, 7.0)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    rng = torch.get_rng_state()

    result = measure_sharpness(model, dataset, QUICK, CPU)

    after = model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)  # weights and BN statistics
    assert model.conv.weight.grad is None
    assert torch.equal(model.head.weight.grad, torch.full_like(model.head.weight, 7.0))
    assert all(module.training for module in model.modules())
    assert torch.equal(torch.get_rng_state(), rng)
    model.eval()
    in_eval_mode = measure_sharpness(model, dataset, QUICK, CPU)
    assert (in_eval_mode["trace"], in_eval_mode["eigenvalues"]) == (result["trace"], result["eigenvalues"])
    assert not model.training  # and a model in eval mode stays there


def test_the_subset_is_fixed_by_the_seed_and_capped_by_the_dataset(trained_tiny):
    _, dataset = trained_tiny
    first = fixed_subset_batches(dataset, 40, 16, seed=3)
    assert [len(targets) for _, targets in first] == [16, 16, 8]
    again = fixed_subset_batches(dataset, 40, 16, seed=3)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again))
    other = fixed_subset_batches(dataset, 40, 16, seed=4)
    assert not torch.equal(first[0][0], other[0][0])
    assert sum(len(targets) for _, targets in fixed_subset_batches(dataset, 10_000, 64, seed=0)) == len(dataset)


class Examples(Dataset):
    """Raw examples that only a collate function turns into batches."""

    def __init__(self, features: Tensor, labels: Tensor) -> None:
        self.features, self.labels = features, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"features": self.features[index], "label": self.labels[index]}


def to_mapping_batch(examples: list[dict[str, Tensor]]) -> tuple[dict[str, Tensor], Tensor]:
    """Inputs as a mapping of tensors, as tokenised text is."""
    return ({"features": torch.stack([e["features"] for e in examples])}, torch.stack([e["label"] for e in examples]))


class DictModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(5, 3)

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        return self.head(inputs["features"])


def test_a_collate_function_and_inputs_that_are_a_mapping_of_tensors():
    generator = torch.Generator().manual_seed(0)
    dataset = Examples(torch.randn(40, 5, generator=generator), torch.randint(0, 3, (40,), generator=generator))
    result = measure_sharpness(DictModel(), dataset, QUICK, CPU, collate_fn=to_mapping_batch)
    assert (result["samples"], result["batches"]) == (40, 2) and result["trace"] > 0 and result["lambda_max"] > 0
