"""The CLI's skeleton: help, version, one-line errors with exit code 2."""
from __future__ import annotations

import subprocess
import sys

import pytest

import densevit
from densevit.cli import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"densevit {densevit.__version__}"


def test_help_lists_subcommands() -> None:
    result = subprocess.run([sys.executable, "-m", "densevit", "--help"], capture_output=True, text=True, check=True)
    for command in ("convert", "demo"):
        assert command in result.stdout


def test_unknown_converter_is_one_line_error(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    code = main(["convert", "detr-oficial", str(tmp_path / "in.pth"), str(tmp_path / "out.pth")])
    err = capsys.readouterr().err
    assert code == 2
    assert "unknown converter 'detr-oficial'" in err and "did you mean detr-official" in err
    assert len(err.strip().splitlines()) == 1
