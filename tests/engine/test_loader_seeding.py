"""Augmentation with random generators of its own (albumentations) is seeded per sample from
the epoch's seed and the sample's index: loader workers do not repeat each other or the last
epoch, and a run does not depend on the number of workers or on where it was resumed."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from toy_segmentation_task import toy_config

from densevit.data.coco import CocoDetection
from densevit.data.det_transforms import train_transforms
from densevit.data.seg_transforms import medical_train
from densevit.data.volumes import SliceDataset, VolumeCase
from densevit.engine.checkpoint import load_checkpoint
from densevit.engine.signals import TrainingInterrupted
from densevit.engine.trainer import train


@pytest.fixture(scope="module")
def one_photo_eight_times(real_data: Path, tmp_path_factory) -> CocoDetection:
    """Eight samples of one VOC photo and its boxes: their augmentations alone tell them apart."""
    voc = real_data / "voc100"
    raw = json.loads((voc / "annotations" / "instances.json").read_text())
    image = raw["images"][0]
    boxes = [a for a in raw["annotations"] if a["image_id"] == image["id"]]
    copies = {"categories": raw["categories"], "images": [], "annotations": []}
    for k in range(8):
        copies["images"].append({**image, "id": k + 1})
        copies["annotations"] += [{**a, "id": 100 * k + j, "image_id": k + 1} for j, a in enumerate(boxes)]
    path = tmp_path_factory.mktemp("copies") / "instances.json"
    path.write_text(json.dumps(copies))
    augment = train_transforms(scales=(200, 232, 264, 296), max_size=400, crop_resize_scales=(150, 200),
                               crop_size=(100, 180))
    return CocoDetection(voc / "images", path, augment)


def _draws(dataset, order: list[int], workers: int) -> dict[int, tuple]:
    """Sample index -> (height, width, rounded pixel sum, boxes) of one read each."""
    loader = DataLoader(dataset, batch_size=None, sampler=order, num_workers=workers)
    return {index: (*image.shape[1:], round(float(image.sum()), 2), target["boxes"].numpy().round(4).tobytes())
            for index, (image, target) in zip(order, loader)}


def test_each_sample_draws_from_the_epoch_seed_and_its_index_only(one_photo_eight_times):
    dataset = one_photo_eight_times
    dataset.reseed(10)
    epoch = _draws(dataset, list(range(8)), workers=2)
    assert len(set(epoch.values())) >= 6  # the copies come out differently (two workers included)
    assert _draws(dataset, list(range(8)), workers=0) == epoch  # whoever loads them
    assert _draws(dataset, [5, 6, 7, 0, 1], workers=1) == {i: epoch[i] for i in (5, 6, 7, 0, 1)}  # in any order
    dataset.reseed(11)  # the next epoch
    assert sum(a != b for a, b in zip(_draws(dataset, list(range(8)), workers=2).values(), epoch.values())) >= 6


def test_segmentation_slices_follow_the_seed():
    rng = np.random.default_rng(0)
    image = rng.random((1, 48, 40, 1)).astype(np.float32)
    label = (rng.random((48, 40, 1)) > 0.5).astype(np.int64)
    case = VolumeCase(case_id="c", image=image, label=label, affine=np.eye(4), spacing=(1.0, 1.0, 1.0),
                      image_paths=(Path("c.nii.gz"),), label_path=None)
    dataset = SliceDataset([case], medical_train((32, 32), rotate=30.0))

    def reads() -> list[np.ndarray]:
        return [dataset[0]["image"].numpy() for _ in range(4)]

    dataset.reseed(3)
    first = reads()
    assert all(np.array_equal(first[0], again) for again in first[1:])
    dataset.reseed(4)
    assert not np.array_equal(first[0], reads()[0])


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def test_training_does_not_depend_on_workers_or_on_a_resume(tmp_path):
    sets = ("data.flip=false", "data.augment=albumentations")
    train(toy_config(*sets, "train.num_workers=2"), tmp_path / "two", device="cpu")
    train(toy_config(*sets, "train.num_workers=0"), tmp_path / "none", device="cpu")
    with pytest.raises(TrainingInterrupted, match="at step 6/8"):
        train(toy_config(*sets, "train.num_workers=1", "loss.interrupt_at_call=6"), tmp_path / "resumed", device="cpu")
    train(toy_config(*sets, "train.num_workers=1"), tmp_path / "resumed", resume="auto", device="cpu")
    reference = _weights(tmp_path / "two" / "last.pth")
    for other in ("none", "resumed"):
        weights = _weights(tmp_path / other / "last.pth")
        assert all(torch.equal(reference[name], weights[name]) for name in reference), other
    # and the augmentation did something: without it the weights differ
    train(toy_config("data.flip=false", "train.num_workers=0"), tmp_path / "plain", device="cpu")
    plain = _weights(tmp_path / "plain" / "last.pth")
    assert not all(torch.equal(reference[name], plain[name]) for name in reference)
