"""The ``volume_segmentation`` task: CT/MRI volumes trained on 2D slices, scored per case by Dice and HD95.

Validation segments each whole case with :func:`~densevit.segmentation.inferer.segment_volume`
(slices resized to ``data.crop_size``, logits resized back), the function ``densevit predict``
uses too, and scores the 3D result against the case's label volume.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor, nn
from torch.utils.data import Dataset

from densevit.data.collate import collate_cases, collate_segmentation
from densevit.data.volumes import (
    CaseDataset,
    SliceDataset,
    SynapseSliceDataset,
    VolumeCase,
    load_nifti_cases,
    load_synapse_cases,
    model_takes,
)
from densevit.errors import ConfigError, UserInputError
from densevit.segmentation.config import VolumeDataConfig
from densevit.segmentation.evaluators import VolumeEvaluator
from densevit.segmentation.inferer import segment_volume
from densevit.segmentation.task_base import SegmentationTaskBase
from densevit.tasks import TASKS


@TASKS.register("volume_segmentation")
class VolumeSegmentationTask(SegmentationTaskBase):
    """Segmentation of volumes (NIfTI, Synapse, phantoms): per-case, per-class Dice and HD95."""

    name = "volume_segmentation"
    data_config = VolumeDataConfig

    def build_datasets(self) -> tuple[Dataset, Dataset | None]:
        """Every case is read and checked here, before training starts (see :meth:`checks`)."""
        d = self.data
        transform = self.train_transform()
        checks = self.checks()
        if d.kind == "synapse":
            if not model_takes(1, checks["in_chans"]):
                raise ConfigError(f"model.kwargs.in_chans: Synapse slices have 1 channel, got {checks['in_chans']}")
            train = SynapseSliceDataset(_required(d.train_root, "data.train_root"), transform, self.num_classes,
                                        d.ignore_index, d.bad_samples)
            val = CaseDataset(load_synapse_cases(Path(d.val_root), **checks)) if d.val_root else None
            return train, val
        train_root, val_root = self._roots()
        train = SliceDataset(load_nifti_cases(train_root, **self.reading(), **checks), transform,
                             d.keep_empty_slices, self.cfg.seed)
        val = CaseDataset(_labelled(load_nifti_cases(val_root, **self.reading(), **checks))) if val_root else None
        return train, val

    def reading(self) -> dict[str, Any]:
        """How cases are read: the arguments of :func:`densevit.data.volumes.load_case` for this config."""
        d = self.data
        return dict(modalities=d.modalities, label_name=d.label_name, normalisation=d.normalisation,
                    ct_window=d.ct_window)

    def checks(self) -> dict[str, Any]:
        """What every case is checked against as it is read: label values are classes or
        ``data.ignore_index``, image channels are what the model takes; ``data.bad_samples``
        says whether a bad case stops the run or is dropped."""
        d = self.data
        return dict(num_classes=self.num_classes, ignore_index=d.ignore_index, in_chans=self.in_chans(),
                    bad_samples=d.bad_samples)

    def validation_root(self) -> Path | None:
        """The folder of validation cases, when the config names one and it exists (nothing is generated)."""
        d = self.data
        root = Path(d.root) / "val" if d.kind == "phantoms" and d.root else Path(d.val_root) if d.val_root else None
        return root if root is not None and root.is_dir() else None

    def _roots(self) -> tuple[Path, Path | None]:
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

    def collate(self, samples: list[Any]) -> tuple[Any, dict[str, Any]]:
        """Training slices: images [B,C,h,w] and ``{"masks", "sizes"}``; validation: whole cases
        (a list of [C,X,Y,Z] volumes and ``{"cases"}``)."""
        if "case_id" in samples[0]:
            return collate_cases(samples)
        return collate_segmentation(samples, 1, self.data.ignore_index)

    def eval_step(self, model: nn.Module, images: list[Tensor], targets: dict[str, Any]) -> list[Tensor]:
        """One label volume [X,Y,Z] per case of the batch."""
        return [segment_volume(model, volume, self.data.crop_size, self.data.eval_chunk) for volume in images]

    def build_evaluator(self) -> VolumeEvaluator:
        from densevit.evaluation.medical import MedicalEvaluator

        names = self.class_names()
        return VolumeEvaluator(MedicalEvaluator(self.num_classes, self.data.medical_convention,
                                                class_names=names or None))

    def default_class_names(self) -> list[str]:
        if self.data.kind == "phantoms":
            from densevit.data.phantoms import PHANTOM_CLASSES

            return list(PHANTOM_CLASSES)
        return []


def _labelled(cases: list[VolumeCase]) -> list[VolumeCase]:
    """Validation cases, each with its label volume (scores need one): else an error before training."""
    for case in cases:
        if case.label is None:
            raise UserInputError(f"{case.image_paths[0]}: validation case {case.case_id} has no label file")
    return cases


def _required(value: str, key: str) -> str:
    if not value:
        raise UserInputError(f"{key}: required for this data.kind")
    return value
