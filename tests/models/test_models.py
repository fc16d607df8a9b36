"""Every model config builds from its config with a dataset it is meant for, runs one forward/backward on
the CPU with the right output shape, and the CIFAR networks have their published parameter counts."""

from __future__ import annotations

import os
import subprocess
import sys
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
    "pyramidnet272": "cifar100", "pyramidnet272_shakedrop": "cifar10",
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
                                                 r"loaded .*hf download .* set model.pretrained to that local copy\.$"):
        build_model(cfg.model)
    with pytest.raises(ConfigError, match=r"^model.name must be a timm model name"):
        build_model(make_config(tmp_path, "model=timm", "model.name=resnet_nosuch", "dataset=cars").model)
    with pytest.raises(ModelNotFoundError, match=r"set model.name_or_path to that local copy\.$"):
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
                                                 ("wrn28_10", "36.5M"), ("wrn16_8", "11.0M"),
                                                 ("pyramidnet110", "28.5M"), ("pyramidnet272", "26.2M")])
def test_parameter_counts_match_the_published_ones(tmp_path: Path, name: str, published: str):
    """The PyramidNet paper lists 28.3M and 26.0M: the authors' code, which this follows, gives 28.5M and 26.2M."""
    cfg = make_config(tmp_path, f"model={name}", "dataset=cifar10")
    assert millions(build_model(cfg.model)) == published


@pytest.mark.parametrize(("overrides", "sentence"), [
    (("model=wrn16_8", "model.depth=17"), "model.depth of a wide ResNet must be 6n + 4 (got 17)."),
    (("model=pyramidnet110", "model.depth=111"), "model.depth of a PyramidNet must be 6n + 2 with basic blocks (got 111)."),
    (("model=resnet18", "model.depth=19"), "model.depth of a CifarResNet must be one of [18, 34, 50] (got 19)."),
])
def test_a_depth_the_architecture_cannot_have_is_one_sentence(tmp_path: Path, overrides, sentence: str):
    with pytest.raises(ConfigError) as caught:
        build_model(make_config(tmp_path, *overrides, "dataset=cifar10").model)
    assert str(caught.value) == sentence


def test_wide_resnet_dropout_option(tmp_path: Path):
    cfg = make_config(tmp_path, "model=wrn16_8", "dataset=cifar10", "model.dropout=0.3")
    dropouts = [m.p for m in build_model(cfg.model).modules() if isinstance(m, torch.nn.Dropout)]
    assert len(dropouts) == 6 and set(dropouts) == {0.3}


@pytest.mark.parametrize("init", ["official", "davda54", "sam_jax"])
def test_wide_resnet_initialisations_follow_their_releases(tmp_path: Path, init: str):
    """Convolutions He normal over fan-out (official, sam_jax) or fan-in (davda54); the head's
    weight zero (davda54), uniform in ±1/√classes (sam_jax) or torch's default (official)."""
    torch.manual_seed(0)
    model = build_model(make_config(tmp_path, "model=wrn16_8", "dataset=cifar10", f"model.init={init}").model)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    stem = convs[0].weight                                                     # 3 → 16 channels, 3×3
    fan = stem[0].numel() if init == "davda54" else stem.shape[0] * stem[0, 0].numel()
    assert stem.std().item() == pytest.approx((2 / fan) ** 0.5, rel=0.15)
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    bound = 10 ** -0.5 if init == "sam_jax" else head.in_features ** -0.5      # torch's default: 1/√fan-in
    assert torch.all(head.bias == 0) and head.weight.abs().max() <= bound
    assert torch.all(head.weight == 0) == (init == "davda54")
    if init == "sam_jax":
        assert head.weight.abs().max() > 0.9 * bound


def test_shakedrop_survival_decays_linearly_to_p_L_and_eval_scales_by_it(tmp_path: Path):
    model = build_model(make_config(tmp_path, "model=pyramidnet272_shakedrop", "dataset=cifar10").model)
    survivals = [block.shakedrop.survival for block in model.blocks]
    assert len(survivals) == 90
    assert survivals[-1] == pytest.approx(0.5) and survivals[0] == pytest.approx(1 - 0.5 / 90)
    assert all(a > b for a, b in zip(survivals, survivals[1:]))
    shakedrop = model.blocks[44].shakedrop.eval()
    residual = torch.randn(4, 3, 2, 2)
    assert torch.equal(shakedrop(residual), residual * survivals[44])


def test_shakedrop_in_training_scales_forward_by_b_plus_alpha_and_backward_by_b_plus_beta():
    from flatmin.models.pyramidnet import ShakeDrop

    torch.manual_seed(0)
    ones = torch.ones(256, 1, 1, 1)
    kept = ShakeDrop(survival=1.0).train()           # b = 1 always: the identity both ways
    residual = ones.clone().requires_grad_()
    kept(residual).sum().backward()
    assert torch.equal(kept(ones), ones) and torch.equal(residual.grad, ones)

    dropped = ShakeDrop(survival=0.0).train()        # b = 0 always: alpha ~ U[-1, 1] forward, beta ~ U[0, 1] back
    residual = ones.clone().requires_grad_()
    forward_factor = dropped(residual)
    forward_factor.sum().backward()
    alpha, beta = forward_factor.detach().flatten(), residual.grad.flatten()
    assert alpha.min() < -0.5 and alpha.max() > 0.5 and alpha.abs().max() <= 1
    assert beta.min() >= 0 and beta.max() <= 1 and beta.min() < 0.1 and beta.max() > 0.9
    assert len(set(alpha.tolist())) == 256           # one alpha per example

    gates = [torch.equal(ShakeDrop(survival=0.7).train()(ones), ones) for _ in range(2000)]
    assert sum(gates) / len(gates) == pytest.approx(0.7, abs=0.04)   # b ~ Bernoulli(p_l), one per batch


def test_an_unreachable_hub_puts_the_libraries_offline_at_once():
    """Offline, a hub lookup must fail at once (no retry loop): flatmin checks the connection first."""
    code = ("import huggingface_hub.constants as hub, datasets.config as ds\n"
            "from flatmin.pretrained import offline_unless_reachable\n"
            "offline_unless_reachable()\n"
            "print(hub.HF_HUB_OFFLINE, ds.HF_HUB_OFFLINE)")
    env = {key: value for key, value in os.environ.items() if key not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    result = subprocess.run([sys.executable, "-c", code], env={**env, "HF_ENDPOINT": "http://127.0.0.1:9"},
                            capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["True", "True"], result.stderr
