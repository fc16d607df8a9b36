"""The device-resident loader: its augmentations draw the CPU path's distributions (run on the CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import binomtest, chisquare, chi2_contingency
from torchvision import transforms

from flatmin.data import build_dataset, make_loaders
from flatmin.data.device_loader import DeviceLoader, cutout, random_crop, random_flip
from flatmin.data.splits import Augmentation
from flatmin.errors import ConfigError
from flatmin.train import run
from tests.conftest import make_config
from tests.data.writers import write_cifar10

CPU = torch.device("cpu")
PAD, SIZE = 4, 32


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def offsets_of_torchvision_crops(count: int) -> np.ndarray:
    """Offsets chosen by the CPU path (torchvision RandomCrop with padding), recovered from a marker pixel."""
    torch.manual_seed(0)
    crop = transforms.RandomCrop(SIZE, padding=PAD)
    marker = np.zeros((SIZE, SIZE), dtype=np.uint8)
    marker[0, 0] = 255                              # at padded position (PAD, PAD)
    image = Image.fromarray(marker)
    offsets = []
    for _ in range(count):
        out = np.asarray(crop(image))
        rows, cols = np.nonzero(out == 255)
        # the marker lands at (PAD - dy, PAD - dx) when it is inside the crop
        offsets.append((PAD - rows[0], PAD - cols[0]) if len(rows) else (-1, -1))
    return np.array(offsets)


def test_crop_offsets_are_uniform_over_the_padded_range_like_torchvision():
    images = torch.arange(SIZE * SIZE, dtype=torch.float32).view(1, 1, SIZE, SIZE).repeat(4000, 1, 1, 1) + 1
    crops, offsets = random_crop(images, PAD, generator())
    padded = torch.nn.functional.pad(images[:1], (PAD,) * 4)[0, 0]
    for b in range(0, 4000, 397):                    # every crop is the padded image at its offset
        dy, dx = offsets[b].tolist()
        assert torch.equal(crops[b, 0], padded[dy:dy + SIZE, dx:dx + SIZE])
    ours = offsets.numpy()
    for axis in range(2):
        counts = np.bincount(ours[:, axis], minlength=2 * PAD + 1)
        assert len(counts) == 2 * PAD + 1 and counts.min() > 0
        assert chisquare(counts).pvalue > 1e-3
    # the CPU path's offsets (where the marker stays visible: offsets 0..PAD) follow the same law
    theirs = offsets_of_torchvision_crops(3000)
    visible = (theirs[:, 0] >= 0)
    ours_visible = ours[(ours[:, 0] <= PAD) & (ours[:, 1] <= PAD)]
    for axis in range(2):
        table = [np.bincount(ours_visible[:, axis], minlength=PAD + 1),
                 np.bincount(theirs[visible, axis], minlength=PAD + 1)]
        assert chi2_contingency(table).pvalue > 1e-3


def test_flip_rate_is_one_half_and_flips_mirror_the_image():
    images = torch.randn(5000, 3, 4, 4, generator=generator(1))
    flipped_images, mask = random_flip(images, generator(2))
    assert binomtest(int(mask.sum()), len(mask), 0.5).pvalue > 1e-3
    assert torch.equal(flipped_images[mask], images[mask].flip(3))
    assert torch.equal(flipped_images[~mask], images[~mask])


def test_cutout_zeroes_a_square_clipped_at_the_borders():
    images = torch.ones(3000, 1, SIZE, SIZE)
    out = cutout(images, 8, generator(3))
    zeroed = (out == 0).sum(dim=(1, 2, 3))
    assert zeroed.max() == 64 and zeroed.min() >= 16          # a corner centre keeps a quarter
    rows = (out[:, 0] == 0).any(dim=2).float().argmax(dim=1)   # the square's top row, clipped
    assert chisquare(np.bincount(rows.numpy(), minlength=SIZE)[4:SIZE - 4]).pvalue > 1e-3


def test_cutout_probability_leaves_the_rest_of_the_images_whole():
    images = torch.ones(4000, 1, SIZE, SIZE)
    cut = (cutout(images, 8, generator(4), probability=0.5) == 0).flatten(1).any(1)
    assert binomtest(int(cut.sum()), len(cut), 0.5).pvalue > 1e-3


def test_epoch_order_is_seeded_and_covers_the_split_once():
    images = torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1).expand(100, 1, 2, 2).contiguous()
    labels = torch.arange(100)
    loader = DeviceLoader(images, labels, 10, CPU, train=True, seed=5)
    loader.set_epoch(3)
    first = torch.cat([y for _, y in loader])
    second = torch.cat([y for _, y in loader])
    assert torch.equal(first, second) and sorted(first.tolist()) == list(range(100))
    loader.set_epoch(4)
    assert not torch.equal(first, torch.cat([y for _, y in loader]))
    x, y = next(iter(loader))
    assert torch.allclose(x[:, 0, 0, 0], y.float() / 255)   # uint8 scaled to [0, 1], paired with labels


def test_replicas_split_each_epoch_between_them():
    images, labels = torch.zeros(64, 1, 2, 2), torch.arange(64)
    shards = [torch.cat([y for _, y in DeviceLoader(images, labels, 4, CPU, train=True, seed=1, rank=r,
                                                   world_size=2)]) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 32
    assert sorted(torch.cat(shards).tolist()) == list(range(64))


def test_evaluation_order_is_fixed_and_complete_and_normalised():
    images = torch.full((10, 3, 2, 2), 255, dtype=torch.uint8)
    loader = DeviceLoader(images, torch.arange(10), 4, CPU, train=False, mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0),
                          augmentation=Augmentation(crop_padding=4, flip=True, cutout=2))
    batches = list(loader)
    assert len(loader) == len(batches) == 3
    assert torch.equal(torch.cat([y for _, y in batches]), torch.arange(10))
    x = batches[0][0]
    assert torch.allclose(x[0, :, 0, 0], torch.tensor([2.0, 1.0, 0.5]))    # no augmentation when evaluating


def cifar_config(tmp_path, *overrides: str):
    write_cifar10(tmp_path, per_batch=20, test=30)
    return make_config(tmp_path / "run", "dataset=cifar10", f"paths.data_dir={tmp_path}", "dataset.download=false",
                       "dataset.augment.cutout=8", *overrides)


def test_cifar_on_the_device_holds_the_same_images_labels_and_normalisation(tmp_path):
    cfg = cifar_config(tmp_path, "dataset.label_noise.rate=0.2", "dataset.loader=gpu", "dataset.num_workers=0")
    splits = build_dataset(cfg.dataset)
    on_device = make_loaders(splits, cfg.dataset, CPU, seed=0, rank=0, world_size=1)
    assert isinstance(on_device.train, DeviceLoader) and isinstance(on_device.test, DeviceLoader)
    cfg.dataset.loader = "torch"
    in_workers = make_loaders(splits, cfg.dataset, CPU, seed=0)
    for device_loader, torch_loader in ((on_device.val, in_workers.val), (on_device.test, in_workers.test)):
        for (x, y), (x_cpu, y_cpu) in zip(device_loader, torch_loader):
            assert torch.equal(y, y_cpu)
            assert torch.allclose(x, x_cpu, atol=1e-6)
    images, labels = splits.on_device.train
    assert torch.equal(labels, torch.from_numpy(splits.train.samples.labels))      # the noisy labels
    assert on_device.train.augmentation == Augmentation(crop_padding=4, flip=True, cutout=8)
    cfg = cifar_config(tmp_path, "dataset.loader=gpu", "dataset.augment.cutout_probability=0.5")
    on_device = make_loaders(build_dataset(cfg.dataset), cfg.dataset, CPU, seed=0, rank=0, world_size=1)
    assert on_device.train.augmentation.cutout_probability == 0.5


def test_auto_picks_the_device_loader_only_on_cuda_and_gpu_refuses_cpu_only_policies(tmp_path):
    cfg = cifar_config(tmp_path, "dataset.loader=auto")
    assert not isinstance(make_loaders(build_dataset(cfg.dataset), cfg.dataset, CPU, 0).train, DeviceLoader)
    cfg = cifar_config(tmp_path, "dataset.loader=gpu", "dataset.augment.policy=autoaugment")
    with pytest.raises(ConfigError, match="dataset.loader=gpu is not available for cifar10"):
        make_loaders(build_dataset(cfg.dataset), cfg.dataset, CPU, 0)


def test_a_digits_run_trains_from_the_device_resident_split(cfg_factory):
    summary = run(cfg_factory("dataset.loader=gpu", "trainer.epochs=3"))
    assert summary["global_steps"] == 3 * (1078 // 64)
    assert summary["test"]["best_val"]["test/accuracy"] > 0.8
