"""Stopping a run cleanly: SIGINT / SIGTERM become a request the loop honours between steps."""
from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM arrived; a resumable checkpoint was written first."""

    def __init__(self, message: str, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint


class StopRequest:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps (a later second SIGINT aborts)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._first_at = 0.0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    # torchrun forwards the Ctrl-C that the terminal also sent each worker: repeats this
    # close together are one request; a later second Ctrl-C means "stop now".
    REPEAT_WINDOW_S = 2.0

    def _handle(self, signum: int, frame: Any) -> None:
        now = time.monotonic()
        if self.signal_name is not None:
            if signum == signal.SIGINT and now - self._first_at > self.REPEAT_WINDOW_S:
                raise KeyboardInterrupt  # asked twice: stop now, without the checkpoint
            return
        self.signal_name = signal.Signals(signum).name
        self._first_at = now

    @property
    def requested(self) -> bool:
        return self.signal_name is not None
