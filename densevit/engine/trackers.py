"""Experiment trackers: TensorBoard, MLflow and Weights & Biases, behind one small interface.

``train.loggers`` names them (``jsonl`` is ``metrics.jsonl``, always written by
:class:`~densevit.engine.logs.RunLogger`, which drives the trackers on the main process).
Each tracker receives the same scalars as ``metrics.jsonl`` (``train/loss``, ``train/lr``, ...,
``val/mIoU``, ...), the resolved config once, and the final metrics at the end. Their packages
are optional extras, imported only when a config names them.

Where the records go:

* ``tensorboard``: event files in ``<run dir>/tensorboard``.
* ``mlflow``: the tracking URI MLflow itself resolves (``MLFLOW_TRACKING_URI``, else MLflow's
  default), experiment ``name`` of the config (or ``densevit``), run name = the run folder's
  name; the config as flattened params (``optim.lr``) and as the artifact ``config.yaml``.
* ``wandb``: project ``WANDB_PROJECT`` (or ``densevit``), files under ``WANDB_DIR`` (or the run
  folder), ``WANDB_MODE=offline`` to log without an account; run name = the run folder's name.

MLflow and W&B run ids are kept in ``<run dir>/trackers.json``, so that a resumed run
(``--resume``) continues the same tracked run.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from densevit.errors import UserInputError, note, one_line
from densevit.io import write_json_atomic

IDS_FILE = "trackers.json"


class Tracker:
    """One tracking backend. The main process calls ``start`` once, then ``log_scalars`` per
    ``metrics.jsonl`` record, ``log_final`` at the end of training, and ``close``."""

    def start(self, config: dict[str, Any], run_dir: Path, resume_id: str | None) -> str | None:
        """Open the run (continue ``resume_id`` when given and still there); returns the id to keep."""
        return None

    def log_scalars(self, step: int, scalars: dict[str, float], prefix: str) -> None:
        """Log ``{name: value}`` as ``<prefix>/<name>`` at iteration ``step``."""
        raise NotImplementedError

    def log_final(self, metrics: dict[str, float]) -> None:
        """The run's final numbers (``final/<metric>``, ``best/<metric>``), logged once."""
        raise NotImplementedError

    def close(self, failed: bool = False) -> None:
        """Flush and end the run (``failed``: training stopped on an error or a signal)."""


class TensorBoardTracker(Tracker):
    """Scalars in ``<run dir>/tensorboard``; the final metrics at the last logged step."""

    def __init__(self, writer_class: Any) -> None:
        self.writer_class = writer_class
        self.writer: Any = None
        self.last_step = 0

    def start(self, config: dict[str, Any], run_dir: Path, resume_id: str | None) -> str | None:
        self.writer = self.writer_class(log_dir=str(run_dir / "tensorboard"))
        return None

    def log_scalars(self, step: int, scalars: dict[str, float], prefix: str) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(f"{prefix}/{name}", value, step)
        self.writer.flush()
        self.last_step = step

    def log_final(self, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, self.last_step)

    def close(self, failed: bool = False) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class MLflowTracker(Tracker):
    """An MLflow run through ``MlflowClient`` (no global active run is touched)."""

    def __init__(self, mlflow: Any) -> None:
        self.mlflow = mlflow
        self.client: Any = None
        self.run_id = ""

    def start(self, config: dict[str, Any], run_dir: Path, resume_id: str | None) -> str | None:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        uri = self.mlflow.get_tracking_uri()  # MLFLOW_TRACKING_URI, else MLflow's default
        try:
            self.client = MlflowClient(tracking_uri=uri)
            self.run_id = self._continued(resume_id) or self._new_run(config, run_dir.name)
        except (MlflowException, ImportError, OSError) as err:
            raise UserInputError(f"train.loggers: mlflow: cannot log to {uri}: {one_line(err)} "
                                 "(set MLFLOW_TRACKING_URI to a server or a store you can write)") from None
        return self.run_id

    def _continued(self, run_id: str | None) -> str:
        """``run_id`` reopened when this tracking store has it, else ''."""
        from mlflow.exceptions import MlflowException

        if not run_id:
            return ""
        try:
            self.client.update_run(run_id, status="RUNNING")
        except MlflowException:  # another store, or the run was deleted: start a new one
            return ""
        return run_id

    def _new_run(self, config: dict[str, Any], run_name: str) -> str:
        from mlflow.entities import Param

        name = config.get("name") or "densevit"
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
        params = [Param(key, _param_text(value)) for key, value in flatten(config).items()]
        for first in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(run_id, params=params[first:first + 100])
        self.client.log_text(run_id, yaml.safe_dump(config, sort_keys=False), "config.yaml")
        return run_id

    def log_scalars(self, step: int, scalars: dict[str, float], prefix: str) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(f"{prefix}/{name}", value, now, step) for name, value in scalars.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def log_final(self, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()])

    def close(self, failed: bool = False) -> None:
        if self.client is not None and self.run_id:
            self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")
            self.client = None


class WandbTracker(Tracker):
    """A W&B run; ``WANDB_MODE``, ``WANDB_PROJECT`` and ``WANDB_DIR`` are honoured."""

    def __init__(self, wandb: Any) -> None:
        self.wandb = wandb
        self.run: Any = None

    def start(self, config: dict[str, Any], run_dir: Path, resume_id: str | None) -> str | None:
        try:
            self.run = self.wandb.init(
                project=os.environ.get("WANDB_PROJECT") or "densevit",
                name=run_dir.name,
                dir=None if os.environ.get("WANDB_DIR") else str(run_dir),  # wandb reads WANDB_DIR itself
                config=config,
                id=resume_id,
                resume="allow" if resume_id else None,
            )
        except self.wandb.errors.Error as err:
            raise UserInputError(f"train.loggers: wandb: cannot start a run: {one_line(err)} "
                                 "(run `wandb login`, or set WANDB_MODE=offline)") from None
        return self.run.id

    def log_scalars(self, step: int, scalars: dict[str, float], prefix: str) -> None:
        self.run.log({f"{prefix}/{name}": value for name, value in scalars.items()}, step=step)

    def log_final(self, metrics: dict[str, float]) -> None:
        self.run.summary.update(metrics)

    def close(self, failed: bool = False) -> None:
        if self.run is not None:
            self.run.finish(exit_code=1 if failed else 0)
            self.run = None


def _tensorboard() -> Tracker:
    from torch.utils.tensorboard import SummaryWriter

    return TensorBoardTracker(SummaryWriter)


def _mlflow() -> Tracker:
    import mlflow

    return MLflowTracker(mlflow)


def _wandb() -> Tracker:
    import wandb

    return WandbTracker(wandb)


# name in train.loggers -> (factory that imports the package, the pip extra that installs it)
TRACKERS: dict[str, tuple[Callable[[], Tracker], str]] = {
    "tensorboard": (_tensorboard, "logs"),
    "mlflow": (_mlflow, "mlflow"),
    "wandb": (_wandb, "wandb"),
}


def build_trackers(loggers: list[str], tensorboard: bool = True) -> dict[str, Tracker]:
    """The trackers that ``train.loggers`` names, their packages imported (``jsonl`` is no tracker).

    ``tensorboard=False`` (the older ``train.tensorboard: false``) leaves TensorBoard out. A
    missing package is a one-line ``UserInputError`` naming the extra to install; TensorBoard,
    which the default list names, is left out with a note instead.
    """
    trackers = {}
    for name in dict.fromkeys(loggers):
        if name == "jsonl" or (name == "tensorboard" and not tensorboard):
            continue
        factory, extra = TRACKERS[name]
        try:
            trackers[name] = factory()
        except ImportError:
            install = f'pip install "densevit[{extra}]"'
            if name == "tensorboard":
                note(f"train.loggers: tensorboard is not installed; no TensorBoard scalars ({install})")
                continue
            raise UserInputError(f"train.loggers: {name} is not installed ({install})") from None
    return trackers


def read_run_ids(run_dir: Path) -> dict[str, str]:
    """The tracked runs' ids kept in ``<run dir>/trackers.json`` (empty when there is none)."""
    path = run_dir / IDS_FILE
    try:
        ids = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):  # none yet, or unreadable: the resumed run starts new ones
        return {}
    return {k: v for k, v in ids.items() if isinstance(v, str)} if isinstance(ids, dict) else {}


def write_run_ids(run_dir: Path, ids: dict[str, str]) -> None:
    write_json_atomic(ids, run_dir / IDS_FILE)


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level with dotted keys: ``{"optim": {"lr": 1}}`` -> ``{"optim.lr": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def _param_text(value: Any) -> str:
    """A param value as MLflow stores it (a string, at most 6000 characters)."""
    text = value if isinstance(value, str) else json.dumps(value)
    return text[:6000]
