"""What a run leaves in its directory: metrics as JSON lines, a curves PNG, and the records
of the experiment trackers ``train.loggers`` names (:mod:`densevit.engine.trackers`).

Only the main process writes; on the others every method is a no-op.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

from densevit.engine.trackers import build_trackers, read_run_ids, write_run_ids
from densevit.errors import UserInputError
from densevit.io import atomic_path, dumps_json, write_text_atomic

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
NOT_SCALARS = ("split", "step", "epoch")  # record keys that say where a record belongs


class RunLogger:
    """Appends records ``{"split": "train"|"val", "step": int, "epoch": int, name: value, ...}`` to
    ``metrics.jsonl`` (always) and sends their numbers to the trackers of ``loggers``.

    ``tensorboard=False`` (the older ``train.tensorboard: false``) leaves TensorBoard out.
    The trackers' packages are imported here; their runs open in :meth:`start`.
    """

    def __init__(self, run_dir: Path, enabled: bool, loggers: Sequence[str] = ("jsonl", "tensorboard"),
                 tensorboard: bool = True) -> None:
        self.run_dir = run_dir
        self.enabled = enabled
        self.path = run_dir / METRICS_FILE
        self.trackers = build_trackers(list(loggers), tensorboard) if enabled else {}
        self.started = False
        self.already_sent: set[tuple[str, int]] = set()  # records the trackers got before a resume

    def start(self, config: dict[str, Any], resumed: bool) -> None:
        """Open the trackers' runs; a resumed run continues the runs whose ids the run folder kept."""
        if not self.enabled or not self.trackers:
            return
        kept = read_run_ids(self.run_dir) if resumed else {}
        ids = {name: tracker.start(config, self.run_dir, kept.get(name)) for name, tracker in self.trackers.items()}
        self.started = True
        write_run_ids(self.run_dir, {**kept, **{name: i for name, i in ids.items() if i}})

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step``: a resumed run rewrites them (they came after the checkpoint).

        The trackers received them already; when rewritten they are not sent again.
        """
        if not self.enabled or not self.path.is_file():
            return
        lines = self.path.read_text().splitlines()
        kept = [line for line in lines if _step_of(line) <= step]
        self.already_sent = {_where(line) for line in lines if _step_of(line) > step} - {None}
        write_text_atomic(self.path, "".join(line + "\n" for line in kept))

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as handle:
            handle.write(dumps_json(record) + "\n")
        where = (record["split"], record["step"])
        if not self.started or where in self.already_sent:
            return
        scalars = {k: v for k, v in record.items() if k not in NOT_SCALARS and _is_number(v)}
        for tracker in self.trackers.values():
            tracker.log_scalars(record["step"], scalars, prefix=record["split"])

    def log_final(self, metrics: dict[str, Any], best: dict[str, float]) -> None:
        """The final validation ``metrics`` as ``final/<name>`` and ``best`` as ``best/<name>``."""
        if not self.started:
            return
        final = {f"final/{k}": v for k, v in metrics.items() if _is_number(v)}
        final.update({f"best/{k}": v for k, v in best.items() if _is_number(v)})
        for tracker in self.trackers.values():
            tracker.log_final(final)

    def close(self, plot: bool = True, failed: bool = False) -> None:
        """End the trackers' runs (``failed``: the run stopped on an error) and draw ``curves.png``
        (when matplotlib is installed)."""
        if not self.enabled:
            return
        for tracker in self.trackers.values():
            tracker.close(failed)
        self.trackers, self.started = {}, False
        if plot and self.path.is_file():
            plot_curves(self.path, self.run_dir / CURVES_FILE)


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file.

    A last line cut short (the run was killed while appending it) is left out; a broken line
    anywhere else is a ``UserInputError`` naming the file and the line.
    """
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number == len(lines):
                break
            raise UserInputError(f"{path}: line {number}: not a JSON record ({err.msg})") from None
    return records


def plot_curves(metrics_path: Path, png_path: Path) -> bool:
    """Training losses and validation metrics against the iteration; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    records = read_records(metrics_path)
    panels = [("train", "training losses"), ("val", "validation metrics")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (split, title) in zip(axes, panels):
        rows = [r for r in records if r.get("split") == split]
        names = sorted({k for r in rows for k, v in r.items() if k not in (*NOT_SCALARS, "lr") and _is_number(v)})
        for name in names:
            points = [(r["step"], r[name]) for r in rows if _is_number(r.get(name))]
            ax.plot(*zip(*points), marker="o" if split == "val" else None, markersize=3, label=name)
        ax.set_title(title)
        ax.set_xlabel("iteration")
        if names:
            ax.legend(fontsize=7)
    fig.tight_layout()
    try:
        with atomic_path(png_path) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(fig)
    return True


def _step_of(line: str) -> float:
    try:
        return json.loads(line).get("step", 0)
    except json.JSONDecodeError:  # a line cut short by a crash
        return math.inf


def _where(line: str) -> tuple[str, int] | None:
    """``(split, step)`` of a record line; None for a line cut short."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record.get("split"), record.get("step")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
