"""Experiment configs: YAML files read into typed dataclasses.

* ``_base_: other.yaml`` (relative to the file) names one file whose values this file
  overrides, key by key (a base may itself have a base).
* ``--set a.b=c`` overrides a value from the command line; ``c`` is read as YAML, so
  ``--set train.epochs=3`` gives an int and ``--set model.pretrained=null`` gives None.
* Every key must exist in the schema and every value must have the schema's type; errors
  name the file and the YAML path of the key (``train.epochs``).

The sections ``data`` and ``loss`` differ by task: each task class (see
:mod:`densevit.engine.task`, registered in :data:`densevit.tasks.TASKS`) names its own
dataclasses for them. Reading the files and the overrides into one dict is
:mod:`densevit.config_files`.
"""
from __future__ import annotations

import dataclasses
import importlib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence, Union

from densevit.config_checks import (
    did_you_mean,
    fraction,
    increasing,
    non_negative,
    positive,
)
from densevit.config_files import apply_overrides, read_yaml_with_bases
from densevit.errors import ConfigError
from densevit.io import plain
from densevit.registry import UnknownNameError
from densevit.tasks import TASKS


@dataclass
class ModelConfig:
    """Which model to build: ``densevit.create_model(name, num_classes=..., **kwargs)``."""

    name: str = ""
    num_classes: int = 0
    pretrained: str | None = None  # weights of the whole model: a file, or timm:<model> / hf-hub:<org>/<repo>
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    """Optimiser and parameter groups."""

    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = 1e-4
    weight_decay: float = 1e-4
    momentum: float = 0.9  # SGD only
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW only
    backbone_lr_mult: float = 1.0
    no_weight_decay_on_norm_bias_pos: bool = True
    layer_decay: float = 1.0  # < 1: layer-wise lr decay (BEiT/MAE), for models that number their layers

    def check(self) -> None:
        """Values the optimiser would refuse, or that make no sense, are a ``ConfigError`` naming the key."""
        positive(self.lr, "optim.lr")
        non_negative(self.weight_decay, "optim.weight_decay")
        _below_one(self.momentum, "optim.momentum")
        for i, beta in enumerate(self.betas):
            _below_one(beta, f"optim.betas[{i}]")
        non_negative(self.backbone_lr_mult, "optim.backbone_lr_mult")
        fraction(self.layer_decay, "optim.layer_decay")


@dataclass
class ScheduleConfig:
    """Per-iteration learning-rate schedule: linear warm-up, then step, poly or cosine."""

    name: Literal["constant", "step", "poly", "cosine"] = "constant"
    warmup_iters: int = 0
    warmup_factor: float = 0.001
    milestones: list[int] = field(default_factory=list)  # in iterations, for "step"
    milestone_epochs: list[int] = field(default_factory=list)  # in epochs, for "step"
    gamma: float = 0.1  # for "step": the factor applied at each milestone
    power: float = 0.9  # for "poly"
    min_lr: float = 0.0  # for "poly"/"cosine": the final lr of groups at optim.lr (others scale)

    def check(self) -> None:
        """Values the schedule cannot use are a ``ConfigError`` naming the key."""
        non_negative(self.warmup_iters, "schedule.warmup_iters")
        # 0 is allowed (a warm-up from lr 0), as the scheduler allows it
        if not (_is_number(self.warmup_factor) and 0 <= self.warmup_factor <= 1):
            raise ConfigError(f"schedule.warmup_factor: expected a value in [0, 1], got {self.warmup_factor!r}")
        positive(self.gamma, "schedule.gamma")
        positive(self.power, "schedule.power")
        non_negative(self.min_lr, "schedule.min_lr")
        for name in ("milestones", "milestone_epochs"):
            values = getattr(self, name)
            for i, value in enumerate(values):
                non_negative(value, f"schedule.{name}[{i}]")
            increasing(values, f"schedule.{name}")
        if self.name != "step":
            for name in ("milestones", "milestone_epochs"):
                if getattr(self, name):
                    raise ConfigError(f"schedule.{name}: only used by schedule.name 'step', not {self.name!r}")


@dataclass
class EMAConfig:
    """An exponential moving average of the weights (RT-DETR's ModelEMA; :mod:`densevit.engine.ema`):
    validated, and saved as the checkpoints' ``model``, in place of the weights being trained."""

    decay: float = 0.0  # 0 = off; RT-DETR uses 0.9999
    warmup: int = 2000  # optimiser steps: the decay after n updates is decay * (1 - exp(-n / warmup))


@dataclass
class TrainConfig:
    """The loop: length, batch, precision, evaluation and checkpoint cadence."""

    epochs: int = 0  # epoch-based when > 0
    iters: int = 0  # iteration-based when > 0 (and epochs == 0)
    batch_size: int = 2  # per process
    num_workers: int = 0
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    clip_grad_norm: float = 0.0  # 0 disables clipping
    accumulate_steps: int = 1
    compile: bool = False
    channels_last: bool = False
    eval_every: int = 1  # in epochs (epoch-based) or iterations (iteration-based); 0 = only at end
    eval_samples: int = 0  # validations during training use the first N validation samples; 0 = all
    final_eval: Literal["full", "subset", "skip"] = "full"  # the validation at the end: all samples, eval_samples, none
    checkpoint_every: int = 1  # same unit as eval_every
    best_metric: str = ""  # e.g. "AP" or "mIoU"; empty disables best-checkpoint tracking
    best_mode: Literal["max", "min"] = "max"
    nan_policy: Literal["stop", "skip"] = "stop"
    log_every: int = 10  # iterations between metrics.jsonl / TensorBoard records
    device: str = "auto"  # auto | cpu | cuda | cuda:N (the CLI's --device wins)
    eval_batch_size: int = 0  # per process; 0 = batch_size
    find_unused_parameters: bool = False  # DDP: for models whose loss skips some parameters
    sync_bn: bool = False  # BatchNorm statistics over all processes' batches (CUDA, more than one process)
    ema: EMAConfig = field(default_factory=EMAConfig)
    progress: bool = True  # tqdm bar on the main process
    # metrics.jsonl is always written; tensorboard, mlflow, wandb: see densevit.engine.trackers
    loggers: list[Literal["jsonl", "tensorboard", "mlflow", "wandb"]] = field(
        default_factory=lambda: ["jsonl", "tensorboard"])
    tensorboard: bool = True  # the older switch: false leaves tensorboard out of loggers
    plot_curves: bool = True  # curves.png at the end of the run when matplotlib is installed
    imports: list[str] = field(default_factory=list)  # modules that register custom tasks/models

    def check(self, require_length: bool = True) -> None:
        """Values the types allow but the loop cannot use are a ``ConfigError`` naming the key.

        Loading a config checks everything but ``require_length`` (that one of ``epochs`` and
        ``iters`` is set): configs that only evaluate or predict (those stored in converted
        checkpoints) leave both at 0; the trainer checks it before it builds anything.
        """
        for name in ("epochs", "iters"):
            non_negative(getattr(self, name), f"train.{name}")
        if self.epochs > 0 and self.iters > 0:
            raise ConfigError("train.epochs / train.iters: set exactly one of them to a positive number, "
                              f"got epochs {self.epochs} and iters {self.iters}")
        if require_length and self.epochs == 0 and self.iters == 0:
            raise ConfigError("train.epochs / train.iters: set exactly one of them to a positive number")
        for name in ("batch_size", "accumulate_steps", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name}: expected a positive integer, got {getattr(self, name)}")
        for name in ("eval_every", "checkpoint_every", "eval_batch_size", "num_workers", "eval_samples"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name}: expected 0 or more, got {getattr(self, name)}")
        non_negative(self.clip_grad_norm, "train.clip_grad_norm")
        if not 0.0 <= self.ema.decay < 1.0:
            raise ConfigError(f"train.ema.decay: expected a value in [0, 1) (0 turns EMA off), got {self.ema.decay}")
        if self.ema.warmup < 1:
            raise ConfigError(f"train.ema.warmup: expected a positive number of steps, got {self.ema.warmup}")


@dataclass
class ExperimentConfig:
    """One experiment: task, model, data, loss, optimisation and loop settings."""

    task: str = ""
    name: str = ""
    seed: int = 42
    deterministic: bool = False
    strict: bool = False  # suspicious data (a class never seen, labels mostly ignored) stops the run
    model: ModelConfig = field(default_factory=ModelConfig)
    data: Any = None  # the task's data dataclass
    loss: Any = None  # the task's loss dataclass
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """A plain, YAML-safe dict (what checkpoints and run directories store)."""
        return plain(dataclasses.asdict(self))


# ----------------------------------------------------------------------------- typed reading


def from_dict(cls: type, data: Any, where: str, path: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, checking keys and types.

    ``where`` names the source (a file) and ``path`` the YAML path of ``data``; both appear
    in every error.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {path or 'top level'}: expected a mapping, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            dotted = f"{path}.{key}" if path else str(key)
            raise ConfigError(
                f"{where}: unknown key {dotted!r} (known in {path or 'top level'}: {', '.join(fields)})"
            )
    kwargs = {}
    for key, value in data.items():
        dotted = f"{path}.{key}" if path else key
        kwargs[key] = _coerce(hints[key], value, where, dotted)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where, path)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where, path)
            except ConfigError as err:
                errors.append(err)
        raise errors[0] if len(errors) == 1 else _type_error(where, path, tp, value)
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{where}: {path}: expected one of {choices}, got {value!r}{did_you_mean(value, args)}")
        return value
    if origin in (list, Sequence) or tp is list:
        if not isinstance(value, list):
            raise _type_error(where, path, tp, value)
        item_tp = args[0] if args else Any
        return [_coerce(item_tp, v, where, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _type_error(where, path, tp, value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, where, f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: {path}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(a, v, where, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise _type_error(where, path, tp, value)
        val_tp = args[1] if args else Any
        return {k: _coerce(val_tp, v, where, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise _type_error(where, path, tp, value)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(where, path, tp, value)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _type_error(where, path, tp, value)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _type_error(where, path, tp, value)
        return value
    raise TypeError(f"config schema type {tp!r} at {path} is not supported")


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _type_error(where: str, path: str, tp: Any, value: Any) -> ConfigError:
    name = getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
    return ConfigError(f"{where}: {path}: expected {name}, got {_describe(value)}")


# ----------------------------------------------------------------------------- entry point


def import_task_modules(data: dict[str, Any], where: str) -> None:
    """Import the modules a config lists in ``train.imports`` (custom tasks and models register there).

    Runs on the raw mapping, before typing: the task these modules register decides the
    schema of the ``data`` and ``loss`` sections.
    """
    names = (data.get("train") or {}).get("imports") or []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{where}: train.imports: expected a list of module names, got {names!r}")
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ConfigError(f"{where}: train.imports: cannot import {name!r}: {err}") from None


def build_config(data: dict[str, Any], where: str = "<config>") -> ExperimentConfig:
    """Turn a merged mapping into an :class:`ExperimentConfig`, with task-specific sections.

    The modules of ``train.imports`` are imported first (they may register the task). The
    typed config is then checked whole (:func:`check_config`): every error names ``where``.
    """
    data = dict(data)
    import_task_modules(data, where)
    task_name = data.get("task")
    if not isinstance(task_name, str) or not task_name:
        raise ConfigError(f"{where}: task: required, one of {', '.join(TASKS.names())}")
    try:
        task_cls = TASKS.get(task_name)
    except UnknownNameError as err:
        raise ConfigError(f"{where}: task: {err}") from None
    # A task may bring configs written for an earlier schema up to date (renamed keys, a task
    # name that now stands for two tasks); typing then checks the result as usual.
    upgraded = task_cls.upgrade_config(data, where)
    if upgraded.get("task") != task_name:
        return build_config(upgraded, where)
    data = dict(upgraded)
    sections = {"data": task_cls.data_config, "loss": task_cls.loss_config}
    typed = {name: from_dict(cls, data.pop(name, None) or {}, where, name) for name, cls in sections.items()}
    cfg = from_dict(ExperimentConfig, data, where)
    for name, value in typed.items():
        setattr(cfg, name, value)
    check_config(cfg, task_cls, where)
    return cfg


# ----------------------------------------------------------------------------- value checks

def check_config(cfg: ExperimentConfig, task_cls: Any, where: str) -> None:
    """Check the values of a typed config; the first bad one is a ``ConfigError`` naming ``where``.

    Each section's ``check()`` (the task's ``data`` and ``loss`` dataclasses may define one, as
    ``optim``, ``schedule`` and ``train`` do) raises ``ConfigError("<yaml path>: ...")``; this
    adds the file. ``model`` is the task's to check (its ``check_config(cfg)``, where it has one:
    the built-in tasks check the name, class count and arguments against the model registry).
    """
    try:
        task_check = getattr(task_cls, "check_config", None)
        if callable(task_check):
            task_check(cfg)
        if cfg.model.num_classes < 0:
            raise ConfigError(f"model.num_classes: expected 0 or more, got {cfg.model.num_classes}")
        cfg.optim.check()
        cfg.schedule.check()
        if cfg.schedule.name in ("poly", "cosine") and cfg.schedule.min_lr > cfg.optim.lr:
            raise ConfigError(f"schedule.min_lr: {cfg.schedule.min_lr} is above optim.lr {cfg.optim.lr}")
        cfg.train.check(require_length=False)
        for name in ("data", "loss"):
            check = getattr(getattr(cfg, name), "check", None)
            if callable(check):
                check()
    except ConfigError as err:
        raise ConfigError(_prefixed(where, str(err))) from None


def _prefixed(where: str, message: str) -> str:
    """``message`` starting with ``where: `` (once: messages that name the file already keep it)."""
    return message if message.startswith(f"{where}: ") else f"{where}: {message}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def _below_one(value: float, key: str) -> None:
    """``0 <= value < 1``."""
    if not (_is_number(value) and 0 <= value < 1):
        raise ConfigError(f"{key}: expected a value in [0, 1), got {value!r}")


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read ``path`` (with its ``_base_`` chain), apply ``--set`` overrides, and type-check."""
    data = apply_overrides(read_yaml_with_bases(path), overrides)
    try:
        return build_config(data, where=str(path))
    except ConfigError as err:
        message = str(err)
        # a bad value that came from the command line: say so, the file may be right
        culprits = [item for item in overrides if _names_key(message, item.partition("=")[0])]
        if not culprits:
            raise
        raise ConfigError(f"{message} (from --set {culprits[-1]})") from None


def _names_key(message: str, key: str) -> bool:
    """Whether ``message`` is about ``key`` (``train.epochs``) or a value inside it (``data.crop[1]``)."""
    return any(f"{mark}{key}{end}" in message for mark in (": ", "'") for end in (":", "'", "[", ".", " "))
