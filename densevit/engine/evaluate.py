"""Scoring a model on a validation set: inside the training loop, and stand-alone (``densevit evaluate``)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from densevit import distributed as dist
from densevit.config import ExperimentConfig
from densevit.engine.build import build_task, load_model_weights
from densevit.engine.checkpoint import load_checkpoint
from densevit.engine.loading import input_loader, raise_failures
from densevit.engine.runtime import (
    autocast,
    channels_last,
    resolve_device,
    resolve_precision,
)
from densevit.engine.sampler import ShardSampler
from densevit.engine.task import Task
from densevit.errors import ConfigError


def evaluate_model(
    task: Task,
    model: nn.Module,
    dataset: Dataset,
    make_loader: Any,
    batch_size: int,
    device: torch.device,
    precision: str,
    use_channels_last: bool = False,
) -> dict[str, Any]:
    """Run ``task.eval_step`` over ``dataset`` and return the evaluator's metrics (on every process).

    Under DDP each process takes an unpadded shard, so every sample is scored exactly once;
    every process calls ``compute()``, which combines the shards (the evaluator contract),
    and the main process's result is then shared so that all take the same decisions.
    """
    sampler = ShardSampler(len(dataset), dist.world_size(), dist.rank())
    loader = make_loader(dataset, sampler, batch_size, False)
    evaluator = task.build_evaluator()
    evaluator.reset()
    was_training = model.training
    model.eval()
    # Shards differ in length, so processes agree on input errors once, after their loops.
    with torch.no_grad(), dist.input_errors_shared(device):
        for batch in raise_failures(loader):
            images, targets = task.to_device(batch, device)
            if use_channels_last:
                images = channels_last(images)
            with autocast(precision, device):
                predictions = task.eval_step(model, images, targets)
            evaluator.process(predictions, targets)
    metrics = evaluator.compute()
    model.train(was_training)
    return dist.broadcast_object(metrics)


# After scoring, on the main process: (task, model, validation dataset, device) -> None, e.g. drawing pictures.
AfterScoring = Callable[[Task, nn.Module, Dataset, torch.device], None]


def evaluate(cfg: ExperimentConfig, checkpoint: str | Path, device: str = "auto",
             after: AfterScoring | None = None) -> dict[str, Any]:
    """Score the checkpoint's weights on ``cfg``'s validation set (also under torchrun).

    ``after`` runs on the main process once the metrics are computed (they are returned as
    computed, whatever it does), with the task, the loaded model and the validation set.
    """
    # The checkpoint provides every weight: never read model.pretrained (it may be gone).
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, pretrained=None))
    torch_device = resolve_device(device if device != "auto" else cfg.train.device)
    joined = dist.init_distributed(torch_device)
    try:
        task = build_task(cfg)
        val_set = task.build_val_dataset()
        if val_set is None:
            raise ConfigError(f"data: task {cfg.task!r} built no validation dataset from this config")
        model = task.build_model()
        load_model_weights(model, load_checkpoint(checkpoint), checkpoint)
        model.to(torch_device)
        if cfg.train.channels_last:
            model = model.to(memory_format=torch.channels_last)

        def make_loader(dataset: Dataset, sampler: Any, batch_size: int, drop_last: bool) -> DataLoader:
            return input_loader(dataset, sampler, batch_size, drop_last, cfg.train.num_workers, task.collate)

        metrics = evaluate_model(
            task,
            model,
            val_set,
            make_loader,
            cfg.train.eval_batch_size or cfg.train.batch_size,
            torch_device,
            resolve_precision(cfg.train.precision, torch_device),
            cfg.train.channels_last,
        )
        if after is not None and dist.is_main_process():
            after(task, model, val_set, torch_device)
        return metrics
    finally:
        if joined:
            dist.shutdown_distributed()
