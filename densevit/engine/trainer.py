"""The training loop, the same for every task.

A :class:`~densevit.engine.task.Task` supplies the model, criterion, datasets, collate,
postprocessor and evaluator; the loop supplies devices, mixed precision, DDP, gradient
accumulation and clipping, the schedule, evaluation, checkpoints, exact resume, signal
handling, non-finite loss checks and logs.

With ``train.ema`` the loop keeps an exponential moving average of the weights
(:mod:`densevit.engine.ema`), updated after every optimiser step, and validates and saves it
in place of the weights being trained. At the start of every epoch, before its batches are
drawn, the loop calls ``set_epoch(epoch)`` on the training dataset and on the task when they
define it (augmentation that changes with the epoch).

Counting: a *micro-batch* is one forward/backward on ``train.batch_size`` samples per
process; a *step* (iteration) is one optimiser update after ``train.accumulate_steps``
micro-batches. Schedules, ``train.iters`` and iteration-based cadences count steps.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from densevit import distributed as dist
from densevit.config import ExperimentConfig
from densevit.engine.build import build_model, build_task
from densevit.engine.checkpoint import (
    BEST,
    LAST,
    find_resume_checkpoint,
    load_checkpoint,
    remove_partial_checkpoints,
    resume_path,
    save_checkpoint,
)
from densevit.engine.ema import ModelEMA
from densevit.engine.evaluate import evaluate_model
from densevit.engine.loading import input_loader, raise_failures
from densevit.engine.logs import RunLogger
from densevit.engine.optim import build_optimizer, build_scheduler
from densevit.engine.runtime import (
    autocast,
    channels_last,
    grad_scaler,
    resolve_device,
    resolve_precision,
    seed_everything,
    set_deterministic,
    start_epoch,
    sync_batchnorm,
)
from densevit.engine.sampler import ResumableDistributedSampler
from densevit.engine.signals import StopRequest, TrainingInterrupted
from densevit.engine.state import LoopState, capture, restore, weights_only
from densevit.engine.task import Task
from densevit.errors import ConfigError
from densevit.io import plain, writable_folder, write_json_atomic, write_text_atomic

CONFIG_FILE = "config.yaml"
FINAL_METRICS_FILE = "metrics.json"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or Inf (``train.nan_policy: stop``); no checkpoint was written for it."""


class Trainer:
    """Builds everything for ``cfg`` and trains it; files go to ``out_dir`` (main process only)."""

    def __init__(self, cfg: ExperimentConfig, out_dir: Path, device: str = "auto") -> None:
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        tcfg = cfg.train
        self.device = resolve_device(device if device != "auto" else tcfg.device)
        self.joined_group = dist.init_distributed(self.device)
        try:
            self._build()
        except BaseException:
            self.close()  # leave no process group behind a bad config
            raise

    def _build(self) -> None:
        cfg, tcfg = self.cfg, self.cfg.train
        self.rank, self.world = dist.rank(), dist.world_size()
        self.main = dist.is_main_process()
        self.precision = resolve_precision(tcfg.precision, self.device)
        with dist.input_errors_shared(self.device):  # a file only one process cannot read stops all
            self._build_parts()
        self.train_model = self._wrap(self.model)
        # After wrapping: DDP has given every process rank 0's weights, so all averages start equal.
        self.ema = ModelEMA(self.model, tcfg.ema.decay, tcfg.ema.warmup) if tcfg.ema.decay > 0 else None
        self.state = LoopState()
        self.stop = StopRequest()
        self.stop_agreed = False  # every process saw the stop request in the same step
        self.step_lr = cfg.optim.lr
        self.last_saved_step = -1

    def _build_parts(self) -> None:
        """Task, model, data, optimiser and schedule: everything before the first collective."""
        cfg, tcfg = self.cfg, self.cfg.train
        tcfg.check()
        self._make_run_dir()
        # The trackers' packages are imported here: a missing one stops the run before any work.
        self.logger = RunLogger(self.out_dir, self.main, tcfg.loggers, tensorboard=tcfg.tensorboard)
        set_deterministic(cfg.deterministic)

        # The same seed on every process for the weights (DDP starts from rank 0's anyway, and
        # one process must match many); then a per-process seed for data and dropout.
        seed_everything(cfg.seed)
        self.task: Task = build_task(cfg)
        self.model: nn.Module = build_model(self.task).to(self.device)
        if tcfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if tcfg.sync_bn:  # before the optimiser and DDP take the layers
            self.model, why_not = sync_batchnorm(self.model, self.world, self.device)
            if why_not:
                self._print(f"train.sync_bn: {why_not}")
        self.criterion: nn.Module = self.task.build_criterion().to(self.device)
        self.train_set, self.val_set = self.task.build_datasets()
        seed_everything(cfg.seed + self.rank)

        self.sampler = ResumableDistributedSampler(len(self.train_set), self.world, self.rank, cfg.seed, shuffle=True)
        self.train_loader = self._loader(self.train_set, self.sampler, tcfg.batch_size, drop_last=True)
        self.micro_per_epoch = (len(self.sampler) // tcfg.batch_size) // tcfg.accumulate_steps * tcfg.accumulate_steps
        self.steps_per_epoch = self.micro_per_epoch // tcfg.accumulate_steps
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"train.batch_size: {len(self.train_set)} training samples are fewer than one step needs "
                f"(batch_size {tcfg.batch_size} x accumulate_steps {tcfg.accumulate_steps} x {self.world} processes)"
            )
        self.total_steps = tcfg.epochs * self.steps_per_epoch if tcfg.epochs > 0 else tcfg.iters

        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.scheduler = build_scheduler(
            self.optimizer, cfg.schedule, self.total_steps, cfg.optim.lr, self.steps_per_epoch
        )
        self.scaler = grad_scaler(self.precision, self.device)

    def _make_run_dir(self) -> None:
        """Create the run directory (main process) before anything is computed, or say why it cannot be."""
        if self.main:
            writable_folder(self.out_dir, "run directory")
            remove_partial_checkpoints(self.out_dir)

    def _loader(self, dataset: Dataset, sampler: Any, batch_size: int, drop_last: bool) -> DataLoader:
        return input_loader(dataset, sampler, batch_size, drop_last, self.cfg.train.num_workers, self.task.collate,
                            pin_memory=self.device.type == "cuda")

    def _wrap(self, model: nn.Module) -> nn.Module:
        wrapped = model
        if self.world > 1:
            wrapped = DistributedDataParallel(
                model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=self.cfg.train.find_unused_parameters,
            )
        if self.cfg.train.compile:
            wrapped = torch.compile(wrapped)
        return wrapped

    # ------------------------------------------------------------------ checkpoints

    def checkpoint_state(self) -> dict[str, Any]:
        """Everything needed to continue; gathers every process's RNG state (collective)."""
        return capture(model=self.model, optimizer=self.optimizer, scheduler=self.scheduler, scaler=self.scaler,
                       state=self.state, config=self.cfg.to_dict(), class_names=self.task.class_names(),
                       world=self.world, ema=self.ema)

    def save(self, name: str) -> Path:
        """Write checkpoint ``name`` in the run directory (main process; all must call): ``last.pth``
        resumable, ``best.pth`` the weights, config and metrics only. With EMA, ``model`` is the
        average in both (what validation scored); ``last.pth`` adds the trained weights."""
        state = self.checkpoint_state()
        if name != LAST:
            state = weights_only(state)
        path = self.out_dir / name
        if self.main:
            save_checkpoint(state, path)
        if name == LAST:
            self.last_saved_step = self.state.step
        dist.barrier()
        return path

    def resume(self, path: Path) -> None:
        """Restore model, EMA, optimiser, scheduler, scaler, position and RNG states from ``path``."""
        checkpoint = load_checkpoint(path, map_location=self.device)
        self.state = restore(checkpoint, path, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                             scaler=self.scaler, world=self.world, rank=self.rank, ema=self.ema)
        if self.ema is not None and "ema_updates" not in checkpoint:
            self._print(f"train.ema: {path} was written without EMA; the average starts from its weights")
        self.last_saved_step = self.state.step
        self.logger.truncate_after(self.state.step)

    # ------------------------------------------------------------------ the loop

    def fit(self, resume: str | Path | None = None) -> dict[str, Any]:
        """Train to the end (or to a signal) and return the final validation metrics."""
        if self.main:
            write_text_atomic(self.out_dir / CONFIG_FILE, yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
        path = resume_path(resume, self.out_dir, self._print)
        if path is not None:
            with dist.input_errors_shared(self.device):  # each process reads the checkpoint itself
                self.resume(path)
            self._print(f"resumed from {path} at step {self.state.step}/{self.total_steps} (epoch {self.state.epoch})")
        bar = tqdm(
            total=self.total_steps,
            initial=self.state.step,
            disable=not (self.main and self.cfg.train.progress),
            dynamic_ncols=True,
            unit="it",
        )
        try:
            with dist.input_errors_shared(self.device):  # a tracker that cannot start stops every process
                self.logger.start(self.cfg.to_dict(), resumed=path is not None)
            with self.stop:
                while True:
                    if self.state.step < self.total_steps:
                        for _ in self._train_steps(bar):
                            if self.stop_agreed:
                                self._interrupt()
                            if self._iteration_based() and self._due(self.state.step, self.cfg.train.eval_every):
                                self._validate()
                            if self._iteration_based() and self._due(self.state.step, self.cfg.train.checkpoint_every):
                                self.save(LAST)
                    # After a stop on an epoch's last step, the resumed run closes that epoch here.
                    if self.state.batch_in_epoch >= self.micro_per_epoch:
                        self._end_epoch()
                    if self.state.step >= self.total_steps:
                        break
                if self.state.last_eval_step != self.state.step:
                    self._validate()
                if self.last_saved_step != self.state.step:
                    self.save(LAST)
            best = {self.cfg.train.best_metric: self.state.best} if self.state.best is not None else {}
            self.logger.log_final(self.state.metrics, best)
        finally:
            bar.close()
            self.logger.close(plot=self.cfg.train.plot_curves, failed=sys.exc_info()[1] is not None)
        if self.main:
            write_json_atomic(self.state.metrics, self.out_dir / FINAL_METRICS_FILE)
        return self.state.metrics

    def _end_epoch(self) -> None:
        self.state.epoch += 1
        self.state.batch_in_epoch = 0
        if not self._iteration_based():
            if self._due(self.state.epoch, self.cfg.train.eval_every):
                self._validate()
            if self._due(self.state.epoch, self.cfg.train.checkpoint_every):
                self.save(LAST)

    def _train_steps(self, bar: tqdm) -> Iterator[None]:
        """Run the rest of the current epoch (at most to ``total_steps``); yields after each step."""
        tcfg = self.cfg.train
        accumulate = tcfg.accumulate_steps
        self.sampler.set_position(self.state.epoch, self.state.batch_in_epoch * tcfg.batch_size)
        epoch_seed = self.cfg.seed * 100_003 + self.state.epoch
        self.train_loader.generator.manual_seed(epoch_seed)
        remaining_micro = self.micro_per_epoch - self.state.batch_in_epoch
        remaining_micro = min(remaining_micro, (self.total_steps - self.state.step) * accumulate)
        if remaining_micro <= 0:
            return  # a resumed run whose checkpoint closed this epoch's last step: nothing left
        # Before the iterator exists: loader workers take their copy of the dataset then.
        start_epoch(self.train_set, self.task, self.state.epoch, epoch_seed)
        batches = raise_failures(itertools.islice(iter(self.train_loader), remaining_micro))
        self.train_model.train()
        window: dict[str, list[float]] = {}
        started = time.perf_counter()
        while True:
            with dist.input_errors_shared(self.device):  # a bad sample on one process stops all
                chunk = list(itertools.islice(batches, accumulate))
            if len(chunk) < accumulate:
                return
            terms = self.train_step(chunk)
            self.state.batch_in_epoch += accumulate
            self.state.step += 1
            for name, value in terms.items():
                window.setdefault(name, []).append(value)
            lr = self.step_lr
            bar.set_postfix(loss=f"{terms['loss']:.4f}", lr=f"{lr:.2e}", epoch=self.state.epoch, refresh=False)
            bar.update(1)
            if self.state.step % max(tcfg.log_every, 1) == 0 or self.state.step == self.total_steps:
                averages = dist.all_reduce_mean({k: sum(v) / len(v) for k, v in window.items()}, self.device)
                elapsed = time.perf_counter() - started
                self.logger.log(
                    {
                        "split": "train",
                        "step": self.state.step,
                        "epoch": self.state.epoch,
                        "lr": lr,
                        **averages,
                        "steps_per_s": len(window["loss"]) / max(elapsed, 1e-9),
                    }
                )
                window, started = {}, time.perf_counter()
            yield

    def train_step(self, chunk: list[Any]) -> dict[str, float]:
        """Forward/backward over the micro-batches of one step, checks, then one update.

        Returns the step's loss terms (averaged over its micro-batches, this process).
        """
        tcfg = self.cfg.train
        sums: dict[str, float] = {}
        for index, batch in enumerate(chunk):
            images, targets = self.task.to_device(batch, self.device)
            if tcfg.channels_last:
                images = channels_last(images)
            last = index == len(chunk) - 1
            # Gradients are averaged across processes only on the last micro-batch of a step.
            sync = contextlib.nullcontext() if last or self.world == 1 else self.train_model.no_sync()
            with sync:
                with autocast(self.precision, self.device):
                    outputs = self.task.train_forward(self.train_model, images, targets)
                    losses = self.criterion(outputs, targets)
                loss = losses["loss"].float() / len(chunk)
                if self.scaler is not None:
                    self.scaler.scale(loss).backward()
                else:
                    loss.backward()
            values = _loss_values(losses)
            for name, value in values.items():
                sums[name] = sums.get(name, 0.0) + value / len(chunk)
            if not math.isfinite(values["loss"]):
                sums["loss"] = values["loss"]  # keep the offending value for the message
        # One small collective per step: did any process see a non-finite loss, or a signal?
        # Acting on the reduced flags keeps every process stopping at the same step.
        flags = torch.tensor(
            [0.0 if math.isfinite(sums["loss"]) else 1.0, 1.0 if self.stop.requested else 0.0], device=self.device
        )
        nonfinite, stop = (bool(f > 0) for f in dist.all_reduce_sum(flags).tolist())
        if stop:
            self.stop_agreed = True
            self.stop.signal_name = self.stop.signal_name or "a signal to another process"
        self.step_lr = self.optimizer.param_groups[0]["lr"]  # the lr of this update, for the logs
        if nonfinite:
            return self._non_finite(sums)
        if tcfg.clip_grad_norm > 0:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), tcfg.clip_grad_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)
        self._advance_schedule()
        return sums

    def _advance_schedule(self) -> None:
        with warnings.catch_warnings():
            # A skipped update (the fp16 scaler searching its scale, or nan_policy: skip) still
            # counts as a step for the schedule; torch warns about exactly that.
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
            self.scheduler.step()

    def _non_finite(self, terms: dict[str, float]) -> dict[str, float]:
        """``nan_policy``: stop (no update, no checkpoint) or skip this update and go on."""
        self.optimizer.zero_grad(set_to_none=True)
        shown = ", ".join(f"{k}={v:.6g}" for k, v in terms.items())
        if math.isfinite(terms["loss"]):
            shown += " here; non-finite on another process"
        where = f"step {self.state.step + 1} (epoch {self.state.epoch})"
        if self.cfg.train.nan_policy == "skip":
            self._print(f"warning: non-finite loss at {where}: {shown}; update skipped (train.nan_policy: skip)")
            self._advance_schedule()
            return terms
        latest = find_resume_checkpoint(self.out_dir)
        kept = f"the last good checkpoint is {latest}" if latest else "no checkpoint had been written yet"
        raise NonFiniteLossError(
            f"non-finite loss at {where}: {shown}; training stopped before the update ({kept}; "
            "lower optim.lr, set train.clip_grad_norm, or set train.nan_policy: skip)"
        )

    def _interrupt(self) -> None:
        path = self.save(LAST)
        raise TrainingInterrupted(
            f"stopped by {self.stop.signal_name} at step {self.state.step}/{self.total_steps}; "
            f"resumable checkpoint {path} (continue with --resume {path} or --resume auto)",
            path,
        )

    # ------------------------------------------------------------------ evaluation

    def _validate(self) -> None:
        """Evaluate, log, and keep ``best.pth`` by ``train.best_metric``; metrics go to ``self.state``.

        On ``train.eval_samples`` validation samples; the validation at the last step follows
        ``train.final_eval``: all samples (``full``), the same subset, or none (``skip``).
        """
        self.state.last_eval_step = self.state.step
        final = self.state.step >= self.total_steps
        if self.val_set is None or (final and self.cfg.train.final_eval == "skip"):
            return
        metrics = plain(self.evaluate(everything=final and self.cfg.train.final_eval == "full"))
        self.state.metrics = metrics
        self.logger.log({"split": "val", "step": self.state.step, "epoch": self.state.epoch, **metrics})
        name = self.cfg.train.best_metric
        if name:
            if name not in metrics:
                raise ConfigError(
                    f"train.best_metric: {name!r} is not among the evaluator's metrics ({', '.join(metrics)})"
                )
            if self.state.improve_best(float(metrics[name]), self.cfg.train.best_mode):
                self.save(BEST)
        self.train_model.train()

    def evaluate(self, everything: bool = True) -> dict[str, Any]:
        """Score the validation set (or its first ``train.eval_samples``) with the EMA weights when
        ``train.ema`` is on, else the model's: each process runs its shard; the evaluator combines them."""
        subset = self.cfg.train.eval_samples
        dataset = self.val_set if everything or not subset else Subset(self.val_set, range(min(subset, len(self.val_set))))
        return evaluate_model(
            self.task,
            self.model if self.ema is None else self.ema.module,
            dataset,
            self._loader,
            self.cfg.train.eval_batch_size or self.cfg.train.batch_size,
            self.device,
            self.precision,
            self.cfg.train.channels_last,
        )

    # ------------------------------------------------------------------ small helpers

    def _iteration_based(self) -> bool:
        return self.cfg.train.epochs <= 0

    @staticmethod
    def _due(count: int, every: int) -> bool:
        return every > 0 and count > 0 and count % every == 0

    def _print(self, message: str) -> None:
        if self.main:
            tqdm.write(message, file=sys.stderr)

    def close(self) -> None:
        if self.joined_group:
            dist.shutdown_distributed()


def train(cfg: ExperimentConfig, out_dir: Path, resume: str | None = None, device: str = "auto") -> dict[str, Any]:
    """Train ``cfg`` into run directory ``out_dir``; returns the final validation metrics.

    ``resume``: a checkpoint path, ``"auto"`` (the newest in ``out_dir``, or a fresh start),
    or None. Raises :class:`NonFiniteLossError` and :class:`TrainingInterrupted`.
    """
    trainer = Trainer(cfg, Path(out_dir), device=device)
    try:
        return trainer.fit(resume)
    finally:
        trainer.close()


# ---------------------------------------------------------------------- module helpers


def _loss_values(losses: dict[str, torch.Tensor]) -> dict[str, float]:
    """The loss terms as floats (one device sync for all of them)."""
    if "loss" not in losses:
        raise KeyError(f"the criterion must return the weighted sum as 'loss'; it returned {sorted(losses)}")
    names = sorted(losses, key=lambda n: (n != "loss", n))
    values = torch.stack([losses[n].detach().float().reshape(()) for n in names]).tolist()
    return dict(zip(names, values))
