"""What a run leaves in its directory: metrics as JSON lines, TensorBoard scalars, a curves PNG.

Only the main process writes; on the others every method is a no-op.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from densevit.errors import UserInputError
from densevit.io import atomic_path, dumps_json, write_text_atomic

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"


class RunLogger:
    """Appends records ``{"split": "train"|"val", "step": int, "epoch": int, name: value, ...}``."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool = True) -> None:
        self.run_dir = run_dir
        self.enabled = enabled
        self.path = run_dir / METRICS_FILE
        self.writer = _tensorboard_writer(run_dir) if enabled and tensorboard else None

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step``: a resumed run rewrites them (they came after the checkpoint)."""
        if not self.enabled or not self.path.is_file():
            return
        kept = [line for line in self.path.read_text().splitlines() if _step_of(line) <= step]
        write_text_atomic(self.path, "".join(line + "\n" for line in kept))

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as handle:
            handle.write(dumps_json(record) + "\n")
        if self.writer is not None:
            split, step = record["split"], record["step"]
            for name, value in record.items():
                if name not in ("split", "step", "epoch") and _is_number(value):
                    self.writer.add_scalar(f"{split}/{name}", value, step)
            self.writer.flush()

    def close(self, plot: bool = True) -> None:
        """Close TensorBoard and draw ``curves.png`` (when matplotlib is installed)."""
        if not self.enabled:
            return
        if self.writer is not None:
            self.writer.close()
            self.writer = None
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
        names = sorted({k for r in rows for k, v in r.items() if k not in ("split", "step", "epoch", "lr") and _is_number(v)})
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


def _tensorboard_writer(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is an optional extra
        return None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


def _step_of(line: str) -> float:
    try:
        return json.loads(line).get("step", 0)
    except json.JSONDecodeError:  # a line cut short by a crash
        return math.inf


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
