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

from densevit.errors import ConfigError
from densevit.tasks import TASKS

IMAGE_KINDS = ("camvid", "cityscapes", "ade20k", "images")
VOLUME_KINDS = ("nifti", "synapse", "phantoms")
Augment = Literal["medical", "street", "none"]


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


@dataclass
class SegmentationLossConfig:
    """``loss:`` of both tasks: cross-entropy and Dice weights (TransUNet: 0.5 / 0.5)."""

    ce_weight: float = 0.5
    dice_weight: float = 0.5
    class_weights: list[float] = field(default_factory=list)


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
