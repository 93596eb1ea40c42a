"""The ``cli`` fixture of the malformed-input tests."""
from __future__ import annotations

import pytest

from densevit.cli import main


@pytest.fixture
def cli(capsys, tmp_path):
    """``densevit`` in-process: ``cli("train", cfg, ...) -> (exit code, stderr)``."""
    runs = []

    def run(command: str, *args: str) -> tuple[int, str]:
        runs.append(command)
        extra = ["--out", str(tmp_path / f"run{len(runs)}"), "--device", "cpu"] if command == "train" else []
        capsys.readouterr()
        rc = main([command, *args, *extra])
        return rc, capsys.readouterr().err

    return run
