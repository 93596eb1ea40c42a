"""A tiny, fast, real segmentation task for the engine's tests (registered as ``toy_segmentation``).

Images are seeded Gaussian noise; the mask is the first channel cut at two thresholds into
three classes, so a small conv net can learn it. Importable by subprocesses through
``PYTHONPATH=tests/engine`` and ``train.imports: [toy_segmentation_task]``.

Fault injection for the tests lives in the loss config: ``nan_at_call`` makes the N-th
training call of the criterion (1-based) return NaN; ``interrupt_at_call`` sends this process
``interrupt_signal`` during the N-th call, as a user's Ctrl-C or a scheduler's SIGTERM would.

The epoch hook: with ``data.epoch_log`` set, the training dataset's and the task's
``set_epoch`` calls and the epoch each training sample is read in (also inside loader
workers) are appended to that file, one ``who epoch`` line each (see :func:`read_epoch_log`).
"""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import albumentations as A
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from densevit.data.compose import Augmented, Compose
from densevit.engine.task import TASKS, Task
from densevit.errors import UserInputError
from densevit.inference import RUNNERS, Predictor

CLASS_NAMES = ["low", "mid", "high"]
THRESHOLDS = (-0.4, 0.4)


@dataclass
class ToyData:
    train_size: int = 16
    val_size: int = 8
    image_size: int = 16
    flip: bool = True  # random horizontal flips, drawn from the global torch RNG
    # "albumentations": flips and brightness/contrast from an albumentations pipeline, whose
    # generators are its own (seeded per sample, see densevit.data.compose.Augmented)
    augment: str = "none"
    epoch_log: str = ""  # a file recording set_epoch calls and the epoch of every sample read


@dataclass
class ToyLoss:
    aux_weight: float = 0.01
    nan_at_call: int = -1
    interrupt_at_call: int = -1
    interrupt_signal: str = "SIGINT"


def toy_mask(image: torch.Tensor) -> torch.Tensor:
    """[3,H,W] image -> [H,W] int64 classes 0/1/2 from the first channel."""
    low, high = THRESHOLDS
    return (image[0] > low).long() + (image[0] > high).long()


def log_epoch(path: str, who: str, epoch: int) -> None:
    if path:
        with open(path, "a") as log:
            log.write(f"{who} {epoch}\n")


def read_epoch_log(path: Path) -> list[tuple[str, int]]:
    """The ``(who, epoch)`` lines of a ``data.epoch_log`` file: ``dataset``/``task`` for
    ``set_epoch`` calls, ``sample`` for each training sample read."""
    return [(who, int(epoch)) for who, epoch in (line.split() for line in path.read_text().splitlines())]


class ToyDataset(Augmented, Dataset):
    def __init__(self, size: int, image_size: int, offset: int, flip: bool, epoch_log: str = "",
                 augment: str = "none") -> None:
        self.size, self.image_size, self.offset, self.flip = size, image_size, offset, flip
        self.epoch_log = epoch_log
        self.transform = None
        if augment == "albumentations":
            self.transform = Compose([A.HorizontalFlip(p=0.5), A.RandomBrightnessContrast(0.3, 0.3, p=0.5)])
        self.epoch = -1  # set by the trainer's epoch hook (training set only)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        log_epoch(self.epoch_log, "dataset", epoch)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        log_epoch(self.epoch_log, "sample", self.epoch)
        generator = torch.Generator().manual_seed(self.offset + index)
        image = torch.randn(3, self.image_size, self.image_size, generator=generator)
        if self.flip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        if self.transform is not None:
            self.seed_sample(index)
            augmented = self.transform(image=image.permute(1, 2, 0).numpy())["image"]
            image = torch.from_numpy(np.ascontiguousarray(augmented.transpose(2, 0, 1)))
        return image, toy_mask(image)


class ToyNet(nn.Module):
    """conv3x3 + GroupNorm (per sample, so DDP and one process agree) or BatchNorm (``norm:
    batch``, buffers for the EMA and sync_bn tests) + dropout + conv1x1."""

    backbone_prefixes = ("backbone.",)

    def __init__(self, num_classes: int, width: int = 8, dropout: float = 0.1, norm: str = "group") -> None:
        super().__init__()
        norm_layer = nn.BatchNorm2d(width) if norm == "batch" else nn.GroupNorm(2, width)
        self.backbone = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), norm_layer, nn.ReLU())
        self.pos_embed = nn.Parameter(torch.zeros(1, width, 1, 1))
        self.dropout = nn.Dropout2d(dropout)
        self.head = nn.Conv2d(width, num_classes, 1)

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"}

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images [B,3,H,W] -> {"logits": [B,K,H,W]}."""
        return {"logits": self.head(self.dropout(self.backbone(images) + self.pos_embed))}


class ToyCriterion(nn.Module):
    def __init__(self, cfg: ToyLoss) -> None:
        super().__init__()
        self.cfg = cfg
        self.calls = 0

    def forward(self, outputs: dict[str, torch.Tensor], masks: torch.Tensor) -> dict[str, torch.Tensor]:
        self.calls += 1
        logits = outputs["logits"]
        loss_ce = F.cross_entropy(logits, masks)
        if self.calls == self.cfg.nan_at_call:
            loss_ce = loss_ce * float("nan")
        if self.calls == self.cfg.interrupt_at_call:
            os.kill(os.getpid(), getattr(signal, self.cfg.interrupt_signal))
        loss_aux = logits.pow(2).mean()
        return {"loss_ce": loss_ce, "loss_aux": loss_aux, "loss": loss_ce + self.cfg.aux_weight * loss_aux}


class ConfusionEvaluator:
    """mIoU and pixel accuracy from a confusion matrix."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.reset()

    def reset(self) -> None:
        self.matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)
        self.images = 0

    def process(self, predictions: torch.Tensor, targets: torch.Tensor) -> None:
        k = self.num_classes
        pairs = targets.cpu().reshape(-1) * k + predictions.cpu().reshape(-1)
        self.matrix += torch.bincount(pairs, minlength=k * k).reshape(k, k)
        self.images += len(targets)

    def compute(self) -> dict[str, Any]:
        """Summed over all processes of a distributed run (each scored its own share)."""
        counts = torch.cat([self.matrix.reshape(-1), torch.tensor([self.images])])
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(counts)
        m, images = counts[:-1].reshape(self.matrix.shape).double(), int(counts[-1])
        iou = m.diag() / (m.sum(0) + m.sum(1) - m.diag())
        return {"mIoU": float(iou.nanmean()), "pixel_acc": float(m.diag().sum() / m.sum()), "images": images}


@TASKS.register("toy_segmentation")
class ToySegmentationTask(Task):
    name = "toy_segmentation"
    data_config = ToyData
    loss_config = ToyLoss

    def build_model(self) -> nn.Module:
        return ToyNet(self.cfg.model.num_classes or len(CLASS_NAMES), **self.cfg.model.kwargs)

    def build_criterion(self) -> nn.Module:
        return ToyCriterion(self.cfg.loss)

    def build_datasets(self) -> tuple[Dataset, Dataset | None]:
        d = self.cfg.data
        train = ToyDataset(d.train_size, d.image_size, offset=0, flip=d.flip, epoch_log=d.epoch_log, augment=d.augment)
        val = ToyDataset(d.val_size, d.image_size, offset=100_000, flip=False) if d.val_size else None
        return train, val

    def collate(self, samples: list[Any]) -> tuple[Any, Any]:
        images, masks = zip(*samples)
        return torch.stack(images), torch.stack(masks)

    def build_postprocessor(self) -> Callable[[Any, Any], Any]:
        return lambda outputs, targets: outputs["logits"].argmax(1)

    def build_evaluator(self) -> ConfusionEvaluator:
        return ConfusionEvaluator(self.cfg.model.num_classes or len(CLASS_NAMES))

    def class_names(self) -> list[str]:
        return CLASS_NAMES

    def set_epoch(self, epoch: int) -> None:
        log_epoch(self.cfg.data.epoch_log, "task", epoch)


@RUNNERS.register("toy_segmentation")
def predict_toy(predictor: Predictor, inputs: list[Path], out_dir: Path) -> dict[str, Any]:
    """Each input ``.npy`` [3,H,W] float image -> ``out_dir/<stem>.npy`` [H,W] class indices."""
    for path in inputs:
        if not path.is_file():
            raise UserInputError(f"{path}: no such file")
        image = torch.from_numpy(np.load(path)).float().to(predictor.device)
        with predictor.running():
            labels = predictor.model(image[None])["logits"].argmax(1)[0]
        np.save(out_dir / f"{path.stem}.npy", labels.cpu().numpy())
    return {"images": len(inputs)}


CONFIG = Path(__file__).with_name("toy.yaml")


def toy_config(*overrides: str) -> Any:
    """The toy experiment, with ``--set``-style overrides."""
    from densevit.config import load_config

    return load_config(CONFIG, overrides)
