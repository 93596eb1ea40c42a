"""The ``data`` and ``loss`` sections of the two segmentation tasks, and the legacy ``task: segmentation``.

* ``image_segmentation``: pictures and label maps (CamVid, Cityscapes, ADE20K), scored by mIoU.
* ``volume_segmentation``: CT/MRI volumes (NIfTI, TransUNet's Synapse files, generated phantoms),
  trained on slices and scored per case by Dice and HD95.

Configs and checkpoints written before the split say ``task: segmentation`` with one data
section for both; :func:`upgrade_legacy_config` picks the task from ``data.kind`` and keeps the
keys that task reads.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from densevit.config_checks import (
    at_least,
    non_negative,
    positive,
    positive_size,
    probability,
)
from densevit.errors import ConfigError
from densevit.tasks import TASKS

IMAGE_KINDS = ("camvid", "cityscapes", "ade20k", "images")
VOLUME_KINDS = ("nifti", "synapse", "phantoms")
Augment = Literal["medical", "street", "none"]
BadSamples = Literal["raise", "drop"]


@dataclass
class ImageDataConfig:
    """``data:`` of ``image_segmentation``: pictures and label maps.

    ``kind: camvid | cityscapes | ade20k`` read a dataset ``root`` split into ``train_split`` /
    ``val_split`` in that dataset's layout; ``kind: images`` reads any folder of pictures with a
    folder of label maps (and of field-of-view masks) paired by name, e.g. DRIVE
    (``datasets/drive.md``).
    """

    kind: Literal["camvid", "cityscapes", "ade20k", "images"] = "camvid"  # the folder layout (datasets/*.md)
    root: str = ""
    train_split: str = "train"
    val_split: str = "val"
    # kind: images
    train_images: str = ""
    train_labels: str = ""
    train_fov: str = ""  # field-of-view masks: pixels where the mask is 0 are neither trained on nor scored
    val_images: str = ""
    val_labels: str = ""
    val_fov: str = ""
    image_endings: list[str] = field(default_factory=list)  # name endings dropped to pair, e.g. [_training, _test]
    label_endings: list[str] = field(default_factory=list)  # e.g. [_manual1]
    fov_endings: list[str] = field(default_factory=list)  # e.g. [_training_mask, _test_mask]
    binary_masks: Literal["auto", "yes", "no"] = "auto"  # 0/255 masks read as 0/1 (auto: two classes, 0/255 files)
    medical_metrics: bool = False  # per-image Dice and HD95 as well as mIoU
    spacing: list[float] = field(default_factory=list)  # pixel size (mm) for HD95; empty: pixels
    crop_size: tuple[int, int] = (224, 224)  # training crops (height, width); also the sliding window
    size_divisor: int = 32  # images are padded to multiples of it (the model's own stride wins)
    eval_mode: Literal["whole", "slide"] = "whole"  # inference: whole images or sliding windows
    eval_overlap: float = 0.5  # sliding-window overlap
    eval_chunk: int = 4  # inference: images (whole) or windows (slide) per forward pass
    ignore_index: int = 255
    void_labels: list[int] = field(default_factory=list)  # label values mapped to ignore_index
    class_names: list[str] = field(default_factory=list)
    augment: Augment = "street"
    scale_range: tuple[float, float] = (0.5, 2.0)  # street random rescale
    rotate: float = 20.0  # medical random rotation, degrees
    # A malformed file (unreadable, wrong size or channels, label values that are not classes):
    # raise: stop with one error naming it; drop: leave it out, with one warning counting them.
    # Checked when the data is opened (label values: splits of up to 1000 label maps; larger
    # splits as each map is read, and an error there always stops the run).
    bad_samples: BadSamples = "raise"

    def check(self) -> None:
        _check_common(self)
        at_least(self.size_divisor, "data.size_divisor", 1)
        non_negative(self.eval_overlap, "data.eval_overlap")
        if not self.eval_overlap < 1:
            raise ConfigError(f"data.eval_overlap: expected a value in [0, 1), got {self.eval_overlap!r}")
        for i, size in enumerate(self.spacing):
            positive(size, f"data.spacing[{i}]")
        top = 65535 if self.kind == "images" else 255
        for i, value in enumerate(self.void_labels):
            if not 0 <= value <= top:
                raise ConfigError(f"data.void_labels[{i}]: expected a label-file value in 0..{top}, got {value!r}")


@dataclass
class VolumeDataConfig:
    """``data:`` of ``volume_segmentation``: folders of cases (NIfTI case folders or imagesTr/labelsTr;
    Synapse ``train_npz`` slices and ``test_vol_h5`` volumes; or generated phantoms under ``root``)."""

    kind: Literal["nifti", "synapse", "phantoms"] = "nifti"
    train_root: str = ""
    val_root: str = ""
    root: str = ""  # phantoms: where the generated cases are written
    modalities: list[str] = field(default_factory=list)  # case-folder image file stems, one per channel
    label_name: str = ""  # case-folder label file stem
    normalisation: Literal["ct", "zscore", "none"] = "none"
    ct_window: tuple[float, float] = (-125.0, 275.0)
    keep_empty_slices: float = 1.0  # fraction of label-free training slices kept
    crop_size: tuple[int, int] = (224, 224)  # slices are resized to it, for training and inference
    eval_chunk: int = 32  # inference: slices per forward pass
    medical_convention: Literal["standard", "transunet"] = "standard"  # Dice/HD95 as MONAI or as TransUNet
    ignore_index: int = 255
    class_names: list[str] = field(default_factory=list)
    augment: Augment = "medical"
    scale_range: tuple[float, float] = (0.5, 2.0)  # street random rescale
    rotate: float = 20.0  # medical random rotation, degrees
    phantom_cases: int = 12  # phantoms: generated training cases
    phantom_val_cases: int = 3
    phantom_shape: tuple[int, int, int] = (64, 64, 24)
    # A malformed case (unreadable file, NaN voxels, shapes or channels that do not match, label
    # values that are not classes): raise: stop with one error naming the file; drop: leave the
    # case out, with one warning counting them. Cases are read and checked when the data is
    # opened; Synapse .npz slices are checked for their arrays then and for their values as
    # each is read (an error there always stops the run).
    bad_samples: BadSamples = "raise"

    def check(self) -> None:
        _check_common(self)
        probability(self.keep_empty_slices, "data.keep_empty_slices")
        if not self.ct_window[0] < self.ct_window[1]:
            raise ConfigError(f"data.ct_window: expected [low, high] with low < high, got {list(self.ct_window)}")
        at_least(self.phantom_cases, "data.phantom_cases", 1)
        non_negative(self.phantom_val_cases, "data.phantom_val_cases")
        positive_size(self.phantom_shape, "data.phantom_shape")


def _check_common(data: ImageDataConfig | VolumeDataConfig) -> None:
    """The keys both data sections have."""
    positive_size(data.crop_size, "data.crop_size")
    at_least(data.eval_chunk, "data.eval_chunk", 1)
    for i, scale in enumerate(data.scale_range):
        positive(scale, f"data.scale_range[{i}]")
    if data.scale_range[0] > data.scale_range[1]:
        raise ConfigError(f"data.scale_range: expected [low, high] with low <= high, got {list(data.scale_range)}")
    non_negative(data.rotate, "data.rotate")


@dataclass
class SegmentationLossConfig:
    """``loss:`` of both tasks: cross-entropy and Dice weights (TransUNet: 0.5 / 0.5)."""

    ce_weight: float = 0.5
    dice_weight: float = 0.5
    class_weights: list[float] = field(default_factory=list)

    def check(self) -> None:
        non_negative(self.ce_weight, "loss.ce_weight")
        non_negative(self.dice_weight, "loss.dice_weight")
        if self.ce_weight == 0 and self.dice_weight == 0:
            raise ConfigError("loss.ce_weight / loss.dice_weight: expected at least one above 0, got both 0")
        for i, weight in enumerate(self.class_weights):
            non_negative(weight, f"loss.class_weights[{i}]")


@TASKS.register("segmentation")
class LegacySegmentation:
    """``task: segmentation``: either segmentation task, chosen by ``data.kind`` (configs and
    checkpoints written before the split say this)."""

    @staticmethod
    def upgrade_config(data: dict[str, Any], where: str) -> dict[str, Any]:
        return upgrade_legacy_config(data, where)


def upgrade_legacy_config(data: dict[str, Any], where: str) -> dict[str, Any]:
    """``task: segmentation`` -> ``image_segmentation`` or ``volume_segmentation`` by ``data.kind``.

    The one data section of the old schema held the keys of both; the other task's keys are
    dropped, as they never had an effect there. ``kind: street`` (an old name of the CamVid
    layout) becomes ``camvid``.
    """
    section = dict(data.get("data") or {})
    kind = section.get("kind", "nifti")
    if kind == "street":
        kind = section["kind"] = "camvid"
    if kind in VOLUME_KINDS:
        task, schema = "volume_segmentation", VolumeDataConfig
    elif kind in IMAGE_KINDS:
        task, schema = "image_segmentation", ImageDataConfig
    else:
        raise ConfigError(f"{where}: data.kind: expected one of {', '.join(IMAGE_KINDS + VOLUME_KINDS)}, got {kind!r}")
    known = {f.name for f in dataclasses.fields(schema)}
    legacy = {f.name for f in dataclasses.fields(ImageDataConfig)} | {f.name for f in dataclasses.fields(VolumeDataConfig)}
    kept = {k: v for k, v in section.items() if k in known or k not in legacy}  # unknown keys still fail
    return {**data, "task": task, "data": kept}
