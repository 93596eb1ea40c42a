"""What a run leaves in its directory: metrics as JSON lines, TensorBoard scalars, a curves PNG.

Only the main process writes; on the others every method is a no-op.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from densevit.engine.checkpoint import public_file_mode

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
            handle.write(json.dumps(json_safe(record), allow_nan=False) + "\n")
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
    """The records of a ``metrics.jsonl`` file."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


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
    fd, tmp = tempfile.mkstemp(dir=png_path.parent, prefix=f".{png_path.name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=100)
        os.chmod(tmp, public_file_mode())
        os.replace(tmp, png_path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)
    return True


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, public_file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def json_safe(value: Any) -> Any:
    """Tensors and numpy scalars as Python numbers, NaN/Inf as None (JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist"):
        return json_safe(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
