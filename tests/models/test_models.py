"""Every model config builds from its config with a dataset it is meant for, runs one forward/backward on
the CPU with the right output shape, and the CIFAR networks have their published parameter counts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from flatmin.errors import ConfigError, ModelNotFoundError
from flatmin.models import build_model
from tests.conftest import CONF, make_config

#: model config → the dataset config it is built for (its num_classes, in_channels and input size)
DATASET_OF = {
    "small_cnn": "digits", "resnet18": "cifar10", "resnet34": "cifar100", "resnet50": "cifar10",
    "preact_resnet18": "cifar10", "wrn16_8": "cifar10", "wrn28_10": "cifar100", "pyramidnet110": "cifar10",
    "timm": "cars", "resnet34_imagenet": "aircraft", "bert": "glue/mnli",
}


def model_options() -> list[str]:
    return sorted(path.stem for path in (CONF / "model").glob("*.yaml"))


def image_batch(cfg, side: int = 8) -> torch.Tensor:
    """Two random images. The networks pool globally, so the output shape does not depend on the side:
    a small one keeps the test fast on a CPU (a ViT needs its own 224)."""
    return torch.randn(2, cfg.dataset.in_channels, side, side)


def forward_backward(model: torch.nn.Module, inputs) -> torch.Tensor:
    outputs = model(inputs)
    outputs.float().sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    return outputs


def test_every_model_config_has_a_dataset_here():
    assert set(DATASET_OF) == set(model_options())


@pytest.mark.parametrize("name", [n for n in DATASET_OF if n not in ("bert", "resnet34_imagenet")])
def test_image_models_build_and_train_one_step(tmp_path: Path, name: str):
    cfg = make_config(tmp_path, f"model={name}", f"dataset={DATASET_OF[name]}")
    model = build_model(cfg.model)
    outputs = forward_backward(model, image_batch(cfg, side=32 if name == "timm" else 8))
    assert outputs.shape == (2, cfg.dataset.num_classes)


def test_any_timm_model_by_name(tmp_path: Path):
    cfg = make_config(tmp_path, "model=timm", "model.name=vit_small_patch16_224", "dataset=flowers102")
    outputs = forward_backward(build_model(cfg.model), image_batch(cfg, side=224))
    assert outputs.shape == (2, 102)


def test_the_nso_resnet34_loads_local_imagenet_weights_under_a_new_head(tmp_path: Path):
    import torchvision

    weights = torchvision.models.resnet34()                  # torchvision's layout, as resnet34-b627a593.pth
    torch.save(weights.state_dict(), tmp_path / "resnet34.pth")
    cfg = make_config(tmp_path, "model=resnet34_imagenet", "dataset=aircraft",
                      f"model.pretrained={tmp_path / 'resnet34.pth'}")
    model = build_model(cfg.model)
    assert torch.equal(model.conv1.weight, weights.conv1.weight)
    assert torch.equal(model.layer4[2].conv2.weight, weights.layer4[2].conv2.weight)
    assert model.fc.out_features == 100
    assert forward_backward(model, image_batch(cfg, side=32)).shape == (2, 100)


def test_hub_weights_offline_and_unknown_names_are_one_sentence(tmp_path: Path):
    cfg = make_config(tmp_path, "model=resnet34_imagenet", "dataset=aircraft")
    with pytest.raises(ModelNotFoundError, match=r"^timm model resnet34.tv_in1k's pretrained weights could not be "
                                                 r"loaded .* set model.pretrained=<its local path>\.$"):
        build_model(cfg.model)
    with pytest.raises(ConfigError, match=r"^model.name must be a timm model name"):
        build_model(make_config(tmp_path, "model=timm", "model.name=resnet_nosuch", "dataset=cars").model)
    with pytest.raises(ModelNotFoundError, match=r"set model.name_or_path=<its local path>\.$"):
        build_model(make_config(tmp_path, "model=bert", "dataset=glue/rte").model)


@pytest.mark.parametrize(("dataset", "outputs"), [("glue/mnli", 3), ("glue/stsb", 1)])
def test_bert_from_a_local_folder_classifies_or_regresses(tmp_path: Path, minilm_dir: Path, dataset: str,
                                                         outputs: int):
    cfg = make_config(tmp_path, "model=bert", f"model.name_or_path={minilm_dir}", f"dataset={dataset}")
    model = build_model(cfg.model)
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    inputs = dict(tokenizer(["a cat sat on the mat", "dogs run"], ["a cat is sitting", "nothing moves"],
                            padding=True, return_tensors="pt"))
    assert forward_backward(model, inputs).shape == (2, outputs)


def millions(model: torch.nn.Module) -> str:
    return f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M"


@pytest.mark.parametrize(("name", "published"), [("resnet18", "11.2M"), ("preact_resnet18", "11.2M"),
                                                 ("wrn28_10", "36.5M"), ("wrn16_8", "11.0M")])
def test_parameter_counts_match_the_published_ones(tmp_path: Path, name: str, published: str):
    cfg = make_config(tmp_path, f"model={name}", "dataset=cifar10")
    assert millions(build_model(cfg.model)) == published


def test_wide_resnet_dropout_option(tmp_path: Path):
    cfg = make_config(tmp_path, "model=wrn16_8", "dataset=cifar10", "model.dropout=0.3")
    dropouts = [m.p for m in build_model(cfg.model).modules() if isinstance(m, torch.nn.Dropout)]
    assert len(dropouts) == 6 and set(dropouts) == {0.3}
