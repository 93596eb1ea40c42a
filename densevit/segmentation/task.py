"""The ``segmentation`` task: what the trainer needs to train and evaluate a TransUNet.

Two families of data, one task:

* volumes (``nifti``, ``synapse``, ``phantoms``): training on 2D slices resized to
  ``crop_size``; validation on whole cases. A validation batch is the slices of whole cases,
  its targets keep each case's full-size label volume, and the postprocessor reassembles the
  slice predictions into 3D, so the evaluator (Dice, HD95) sees volumes.
* street scenes (``camvid``, ``cityscapes``, ``ade20k``): training on random scale-crops;
  validation on full images padded to the model's stride (padding is ignored); mIoU.
"""
from __future__ import annotations

from argparse import Namespace
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from densevit.data import seg_transforms as T
from densevit.data.street import CAMVID, CITYSCAPES, StreetDataset, default_palette, find_pairs, label_lookup
from densevit.data.volumes import (
    CaseDataset,
    SliceDataset,
    SynapseSliceDataset,
    load_nifti_cases,
    load_synapse_cases,
)
from densevit.engine.task import TASKS, Task
from densevit.errors import UserInputError
from densevit.models import create_model
from densevit.segmentation.inference import sliding_window_logits
from densevit.segmentation.losses import CEDiceLoss

VOLUME_KINDS = ("nifti", "synapse", "phantoms")
STREET_KINDS = ("camvid", "street", "cityscapes", "ade20k")


@dataclass
class SegmentationDataConfig:
    """The ``data`` section of segmentation configs."""

    kind: Literal["nifti", "synapse", "phantoms", "camvid", "street", "cityscapes", "ade20k"] = "nifti"
    # volumes: folders of cases (NIfTI case folders or imagesTr/labelsTr; Synapse train_npz and
    # test_vol_h5); street: the dataset root, split by ``train_split``/``val_split``.
    train_root: str = ""
    val_root: str = ""
    root: str = ""
    train_split: str = "train"
    val_split: str = "val"
    modalities: list[str] = field(default_factory=list)  # case-folder image file stems, one per channel
    label_name: str = ""  # case-folder label file stem
    normalisation: Literal["ct", "zscore", "none"] = "none"
    ct_window: tuple[float, float] = (-125.0, 275.0)
    keep_empty_slices: float = 1.0  # fraction of label-free training slices kept
    crop_size: tuple[int, int] = (224, 224)
    size_divisor: int = 32  # street validation images are padded to multiples of it
    eval_mode: Literal["whole", "slide"] = "whole"  # street validation: whole images or sliding windows
    eval_overlap: float = 0.5  # sliding-window overlap
    eval_chunk: int = 32  # volume validation: slices per forward pass
    medical_convention: Literal["standard", "transunet"] = "standard"  # Dice/HD95 as MONAI or as TransUNet
    ignore_index: int = 255
    void_labels: list[int] = field(default_factory=list)  # label values mapped to ignore_index
    class_names: list[str] = field(default_factory=list)
    augment: Literal["medical", "street", "none"] = "medical"
    scale_range: tuple[float, float] = (0.5, 2.0)  # street random rescale
    rotate: float = 20.0  # medical random rotation, degrees
    phantom_cases: int = 12  # phantoms: generated training cases (and 3 validation cases)
    phantom_val_cases: int = 3
    phantom_shape: tuple[int, int, int] = (64, 64, 24)


@dataclass
class SegmentationLossConfig:
    """The ``loss`` section: cross-entropy and Dice weights (TransUNet: 0.5 / 0.5)."""

    ce_weight: float = 0.5
    dice_weight: float = 0.5
    class_weights: list[float] = field(default_factory=list)


@TASKS.register("segmentation")
class SegmentationTask(Task):
    """TransUNet-style semantic segmentation of volumes (Dice/HD95) or street scenes (mIoU)."""

    name = "segmentation"
    data_config = SegmentationDataConfig
    loss_config = SegmentationLossConfig

    @property
    def data(self) -> SegmentationDataConfig:
        return self.cfg.data

    @property
    def is_volume(self) -> bool:
        return self.data.kind in VOLUME_KINDS

    # ------------------------------------------------------------------ model and loss

    def build_model(self) -> nn.Module:
        model_cfg = self.cfg.model
        if model_cfg.num_classes < 2:
            raise UserInputError(f"model.num_classes: expected at least 2 (background included), got {model_cfg.num_classes}")
        model = create_model(model_cfg.name, num_classes=model_cfg.num_classes, **model_cfg.kwargs)
        divisor = getattr(model, "size_divisor", 1)
        if any(side % divisor for side in self.data.crop_size):
            raise UserInputError(
                f"data.crop_size: {list(self.data.crop_size)} must be multiples of {divisor} for {model_cfg.name}"
            )
        return model

    def build_criterion(self) -> nn.Module:
        loss = self.cfg.loss
        return CEDiceLoss(loss.ce_weight, loss.dice_weight, self.data.ignore_index, loss.class_weights or None)

    # ------------------------------------------------------------------ data

    def build_datasets(self) -> tuple[Dataset, Dataset | None]:
        if self.is_volume:
            return self._volume_datasets()
        return self._street_datasets()

    def _train_transform(self) -> Callable:
        d = self.data
        if d.augment == "medical":
            return T.medical_train(d.crop_size, d.rotate)
        if d.augment == "street":
            return T.street_train(d.crop_size, d.ignore_index, d.scale_range)
        return T.resize_only(d.crop_size)

    def _volume_datasets(self) -> tuple[Dataset, Dataset | None]:
        d = self.data
        transform = self._train_transform()
        if d.kind == "synapse":
            train = SynapseSliceDataset(_required(d.train_root, "data.train_root"), transform)
            val = CaseDataset(load_synapse_cases(Path(d.val_root))) if d.val_root else None
            return train, val
        train_root, val_root = self._volume_roots()
        load = dict(modalities=d.modalities, label_name=d.label_name, normalisation=d.normalisation, ct_window=d.ct_window)
        train = SliceDataset(load_nifti_cases(train_root, **load), transform, d.keep_empty_slices, self.cfg.seed)
        val = CaseDataset(load_nifti_cases(val_root, **load)) if val_root else None
        return train, val

    def _volume_roots(self) -> tuple[Path, Path | None]:
        d = self.data
        if d.kind == "phantoms":
            from densevit.data.phantoms import write_phantoms

            root = Path(_required(d.root, "data.root"))
            train, val = root / "train", root / "val"
            if not (train / "imagesTr").is_dir():
                write_phantoms(train, d.phantom_cases, seed=self.cfg.seed, shape=d.phantom_shape)
            if not (val / "imagesTr").is_dir() and d.phantom_val_cases > 0:
                write_phantoms(val, d.phantom_val_cases, seed=self.cfg.seed + 1, shape=d.phantom_shape)
            return train, val if d.phantom_val_cases > 0 else None
        return Path(_required(d.train_root, "data.train_root")), Path(d.val_root) if d.val_root else None

    def _street_datasets(self) -> tuple[Dataset, Dataset | None]:
        d = self.data
        root = Path(_required(d.root, "data.root"))
        lookup = self.label_lookup()
        train = StreetDataset(find_pairs(self._layout(), root, d.train_split), lookup, self._train_transform())
        val = StreetDataset(find_pairs(self._layout(), root, d.val_split), lookup, T.street_eval()) if d.val_split else None
        return train, val

    def _layout(self) -> str:
        return {"street": "camvid"}.get(self.data.kind, self.data.kind)

    def label_lookup(self) -> np.ndarray:
        """Label-file value -> class index table for street datasets."""
        return label_lookup(self._layout(), self.data.ignore_index, tuple(self.data.void_labels))

    # ------------------------------------------------------------------ batches

    def collate(self, samples: list[Any]) -> tuple[Tensor, dict[str, Any]]:
        """Training or street validation: images [B,C,H,W], ``{"masks": [B,H,W]}`` (padded with the
        ignore index to a common, stride-divisible size). Volume validation: the slices of whole
        cases [sum Z, C, h, w] resized to ``crop_size``, with ``masks`` resized alike and ``cases``
        holding each full-size label volume."""
        if "case_id" in samples[0]:
            return self._collate_cases(samples)
        divisor = self.data.size_divisor
        height = max(s["image"].shape[-2] for s in samples)
        width = max(s["image"].shape[-1] for s in samples)
        height, width = -(-height // divisor) * divisor, -(-width // divisor) * divisor
        images = torch.stack([_pad(s["image"], height, width, 0.0) for s in samples])
        masks = torch.stack([_pad(s["mask"], height, width, self.data.ignore_index) for s in samples])
        return images, {"masks": masks}

    def _collate_cases(self, samples: list[dict[str, Any]]) -> tuple[Tensor, dict[str, Any]]:
        size = tuple(self.data.crop_size)
        images, masks, cases = [], [], []
        for s in samples:
            if s["label"] is None:
                raise UserInputError(f"validation case {s['case_id']} has no label file")
            slices = s["image"].permute(3, 0, 1, 2).float()  # [Z, C, X, Y]
            images.append(F.interpolate(slices, size=size, mode="bilinear", align_corners=False))
            labels = s["label"].permute(2, 0, 1)[:, None].float()
            masks.append(F.interpolate(labels, size=size, mode="nearest")[:, 0].long())
            cases.append({"case_id": s["case_id"], "label": s["label"], "spacing": s["spacing"]})
        return torch.cat(images), {"masks": torch.cat(masks), "cases": cases}

    # ------------------------------------------------------------------ evaluation

    def eval_step(self, model: nn.Module, images: Tensor, targets: dict[str, Any], postprocess: Callable) -> Any:
        """Volumes: the slices go through the model ``eval_chunk`` at a time (whole cases can be
        hundreds of slices). Street scenes with ``eval_mode: slide``: overlapping crop-size windows."""
        d = self.data
        if self.is_volume:
            logits = torch.cat([model(chunk) for chunk in images.split(d.eval_chunk)])
        elif d.eval_mode == "slide":
            divisor = getattr(model, "size_divisor", d.size_divisor)
            logits = torch.stack(
                [sliding_window_logits(model, image, d.crop_size, d.eval_overlap, size_divisor=divisor) for image in images]
            )
        else:
            logits = model(images)
        return postprocess(logits, targets)

    def build_postprocessor(self) -> Callable[[Tensor, dict[str, Any]], Any]:
        return postprocess_volumes if self.is_volume else postprocess_images

    def build_evaluator(self) -> Any:
        names = self.class_names()
        if self.is_volume:
            from densevit.evaluation.medical import MedicalEvaluator

            return VolumeEvaluator(
                MedicalEvaluator(self.cfg.model.num_classes, self.data.medical_convention, class_names=names or None)
            )
        from densevit.evaluation.semantic import SemanticEvaluator

        return ImageEvaluator(
            SemanticEvaluator(self.cfg.model.num_classes, ignore_index=self.data.ignore_index, class_names=names or None)
        )

    def class_names(self) -> list[str]:
        d = self.data
        if d.class_names:
            return list(d.class_names)
        if d.kind in ("camvid", "street"):
            return list(CAMVID.class_names)
        if d.kind == "cityscapes":
            return list(CITYSCAPES.class_names)
        if d.kind == "phantoms":
            from densevit.data.phantoms import PHANTOM_CLASSES

            return list(PHANTOM_CLASSES)
        return []

    def palette(self) -> list[tuple[int, int, int]]:
        """One RGB colour per class, for overlays and colour label pictures."""
        k = self.cfg.model.num_classes
        if self.data.kind in ("camvid", "street") and k == len(CAMVID.palette):
            return list(CAMVID.palette)
        if self.data.kind == "cityscapes" and k == len(CITYSCAPES.palette):
            return list(CITYSCAPES.palette)
        return default_palette(k)

    # ------------------------------------------------------------------ prediction

    def predict(self, model: nn.Module, inputs: list[Path], out_dir: Path, options: Namespace) -> None:
        from densevit.segmentation.predict import predict_files

        predict_files(self, model, inputs, out_dir, options)


# ---------------------------------------------------------------------- helpers


def _required(value: str, key: str) -> str:
    if not value:
        raise UserInputError(f"{key}: required for this data.kind")
    return value


def _pad(x: Tensor, height: int, width: int, value: float) -> Tensor:
    return F.pad(x, (0, width - x.shape[-1], 0, height - x.shape[-2]), value=value)


def postprocess_images(logits: Tensor, targets: dict[str, Any]) -> Tensor:
    """Logits [B,K,H,W] -> predicted labels [B,H,W] (padding keeps the targets' ignore index)."""
    return logits.argmax(dim=1)


def postprocess_volumes(logits: Tensor, targets: dict[str, Any]) -> list[Tensor]:
    """Slice logits [sum Z,K,h,w] -> one label volume [X,Y,Z] per case, at the case's full size."""
    volumes = []
    start = 0
    for case in targets["cases"]:
        label = case["label"]
        depth = label.shape[-1]
        chunk = logits[start : start + depth].float()
        start += depth
        full = F.interpolate(chunk, size=tuple(label.shape[:2]), mode="bilinear", align_corners=False)
        volumes.append(full.argmax(dim=1).permute(1, 2, 0))
    return volumes


class VolumeEvaluator:
    """Feeds a :class:`MedicalEvaluator` the whole-case predictions of :func:`postprocess_volumes`.

    ``compute()`` flattens its tables into named scalars (``mean_dice``, ``mean_hd95``,
    ``dice/<class>``, ``hd95/<class>``) plus ``cases``, the per-case, per-class rows.
    """

    def __init__(self, evaluator: Any) -> None:
        self.evaluator = evaluator

    def reset(self) -> None:
        self.evaluator.reset()

    def process(self, predictions: list[Tensor], targets: dict[str, Any]) -> None:
        for prediction, case in zip(predictions, targets["cases"], strict=True):
            self.evaluator.process(prediction, case["label"], case["spacing"], case["case_id"])

    def compute(self) -> dict[str, Any]:
        result = self.evaluator.compute()
        metrics: dict[str, Any] = {"mean_dice": result["mean"]["dice"], "mean_hd95": result["mean"]["hd95"]}
        for entry in result["per_class"]:
            metrics[f"dice/{entry['class']}"] = entry["dice"]
            metrics[f"hd95/{entry['class']}"] = entry["hd95"]
        metrics["cases"] = result["cases"]
        return metrics


class ImageEvaluator:
    """Feeds a :class:`SemanticEvaluator` label maps and the batch's masks; flat per-class IoU names."""

    def __init__(self, evaluator: Any) -> None:
        self.evaluator = evaluator

    def reset(self) -> None:
        self.evaluator.reset()

    def process(self, predictions: Tensor, targets: dict[str, Any]) -> None:
        self.evaluator.process(predictions, targets["masks"])

    def compute(self) -> dict[str, Any]:
        result = self.evaluator.compute()
        metrics = {k: v for k, v in result.items() if k != "per_class"}
        metrics.update({f"IoU/{entry['class']}": entry["IoU"] for entry in result["per_class"]})
        return metrics
