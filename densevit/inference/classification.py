"""Classification predictions: the top-5 classes of every image with their probabilities.

Writes ``predictions.csv`` (``path,label,prob,label_2,prob_2,...`` up to rank min(5, K), paths
absolute; the layout ``densevit score classification`` reads, so predicting and scoring gives
the numbers ``densevit evaluate`` gives) and prints one line per image. Exported graphs take
[B,3,H,W] images (as the eval transform makes them) and give the logits [B,K].
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from densevit.classification.data import read_picture
from densevit.classification.task import ClassificationTask
from densevit.data import IMAGE_SUFFIXES
from densevit.engine.task import move_to_device
from densevit.errors import UserInputError
from densevit.evaluation.classification import ranked_columns
from densevit.inference.export import EXPORTERS, ExportSpec
from densevit.inference.inputs import expand_inputs
from densevit.inference.pictures import generated_picture
from densevit.inference.predictor import RUNNERS, Predictor
from densevit.io import write_text_atomic

DEFAULT_BATCH = 16
PREDICTIONS = "predictions.csv"


@RUNNERS.register("classification")
def predict_classification(predictor: Predictor, inputs: list[Path], out_dir: Path) -> dict[str, Any]:
    """Classify every image of ``inputs``; see the module docstring for the file."""
    task: ClassificationTask = predictor.task  # type: ignore[assignment]
    files = expand_inputs(inputs, IMAGE_SUFFIXES)
    names = task.class_names()
    transform = task.eval_transform()
    batch_size = predictor.options.batch_size or DEFAULT_BATCH
    rows: list[list[str]] = []
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        images = move_to_device(torch.stack([transform(read_picture(path)) for path in chunk]), predictor.device)
        with predictor.running():
            ranked = task.eval_step(predictor.model, images, None)
        for path, indices, probs in zip(chunk, ranked["topk"].tolist(), ranked["probs"].tolist()):
            # full precision: the ranks are what is scored, the probabilities are for reading
            cells = [cell for index, prob in zip(indices, probs) for cell in (names[index], repr(prob))]
            rows.append([str(path.resolve()), *cells])
            print(f"{path}: " + ", ".join(f"{names[i]} {p:.3f}" for i, p in zip(indices, probs)))
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", *ranked_columns(len(rows[0]) // 2)])
    writer.writerows(rows)
    write_text_atomic(out_dir / PREDICTIONS, text.getvalue())
    return {"images": len(files), "predictions": str(out_dir / PREDICTIONS)}


@EXPORTERS.register("classification")
def classification_export(task: ClassificationTask, model: nn.Module, sample: Path | None) -> ExportSpec:
    """The sample (else the first validation picture, else a generated one) and its mirror as the
    eval transform makes them, and one picture 32 pixels larger each way (the graph's sizes)."""
    sample = sample or _first_validation_picture(task)
    picture = read_picture(sample) if sample is not None else Image.fromarray(generated_picture(256, 256))
    image = task.eval_transform()(picture)
    other = F.interpolate(image[None], size=(image.shape[-2] + 32, image.shape[-1] + 32), mode="bilinear",
                          align_corners=False)
    return ExportSpec(model, (torch.stack([image, image.flip(-1)]),), (other,), ["images"], ["logits"])


def _first_validation_picture(task: ClassificationTask) -> Path | None:
    """The config's first validation picture, or None when there is none on this machine."""
    try:
        samples = task.samples("val")
    except UserInputError:  # the training data is elsewhere: a generated picture serves
        return None
    return samples[0][0] if samples else None
