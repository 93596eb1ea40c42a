"""``densevit predict`` / ``export`` / ``evaluate`` on malformed checkpoints, graphs, inputs and output
folders: one error line naming the file, exit code 2, no traceback, and nothing written."""
from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from checkpoint_helpers import untrained_checkpoint
from PIL import Image

from densevit.cli import main
from densevit.config import build_config, load_config
from densevit.demos import demo_config_path


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> Path:
    cfg = build_config({"task": "detection", "model": {"name": "detr_tiny", "num_classes": 3},
                        "data": {"class_names": ["a", "b", "c"], "val_size": 64, "max_size": 64}})
    return untrained_checkpoint(tmp_path_factory.mktemp("det") / "model.pth", cfg)


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory) -> Path:
    cfg = load_config(demo_config_path("segment"))
    return untrained_checkpoint(tmp_path_factory.mktemp("seg") / "model.pth", cfg)


def one_error_line(capsys, rc: int, *names: object) -> str:
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and ": error: " in lines[0], err
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    return lines[0]


def picture(path: Path) -> Path:
    Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(path)
    return path


def broken_files(folder: Path) -> dict[str, Path]:
    """Files that are not what their names say."""
    folder.mkdir(parents=True, exist_ok=True)
    good = picture(folder / "good.png").read_bytes()
    files = {"empty": folder / "empty.png", "truncated": folder / "truncated.png", "text": folder / "text.png"}
    files["empty"].write_bytes(b"")
    files["truncated"].write_bytes(good[: len(good) // 2])
    files["text"].write_text("not a picture")
    return files


@pytest.mark.parametrize("kind", ["empty", "truncated", "text"])
def test_a_broken_picture_is_one_line_and_nothing_is_written_for_it(detector, tmp_path, capsys, kind):
    bad = broken_files(tmp_path / "in")[kind]
    out = tmp_path / "out"
    one_error_line(capsys, main(["predict", "--checkpoint", str(detector), str(bad), "--out", str(out)]), bad)
    assert not any(p.name.startswith(bad.stem) for p in out.glob("*"))
    assert not list(out.glob(".*tmp*"))  # no half-written file left behind


def test_a_missing_input_and_a_folder_without_pictures(detector, tmp_path, capsys):
    missing = tmp_path / "nowhere.png"
    one_error_line(capsys, main(["predict", "--checkpoint", str(detector), str(missing), "--out", str(tmp_path / "o")]),
                   missing)
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    one_error_line(capsys, main(["predict", "--checkpoint", str(detector), str(empty), "--out", str(tmp_path / "o")]),
                   empty)


def test_an_output_folder_that_cannot_be_made_stops_before_the_model_is_read(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    image = picture(tmp_path / "p.png")
    # The checkpoint does not even exist: the folder is checked first.
    line = one_error_line(capsys, main(["predict", "--checkpoint", str(tmp_path / "none.pth"), str(image),
                                        "--out", str(blocker / "out")]), blocker)
    assert "is a file, not a folder" in line


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", None])
def test_a_broken_checkpoint_is_one_line(detector, tmp_path, capsys, content):
    bad = tmp_path / "bad.pth"
    if content is None:  # a real checkpoint cut short
        data = detector.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    else:
        bad.write_bytes(content)
    image = picture(tmp_path / "p.png")
    one_error_line(capsys, main(["predict", "--checkpoint", str(bad), str(image), "--out", str(tmp_path / "o")]), bad)
    one_error_line(capsys, main(["export", str(bad), "--out", str(tmp_path / "m.onnx")]), bad)
    assert not (tmp_path / "m.onnx").exists()


def test_a_weights_file_that_is_not_a_training_checkpoint(tmp_path, capsys):
    bare = tmp_path / "weights.pth"
    torch.save({"layer.weight": torch.zeros(2)}, bare)
    image = picture(tmp_path / "p.png")
    one_error_line(capsys, main(["predict", "--checkpoint", str(bare), str(image), "--out", str(tmp_path / "o")]),
                   bare, "config")


def test_a_broken_onnx_graph_is_one_line(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    image = picture(tmp_path / "p.png")
    one_error_line(capsys, main(["predict", "--onnx", str(bad), str(image), "--out", str(tmp_path / "o")]), bad)


def _nifti(path: Path, data: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path


@pytest.mark.parametrize("kind", ["empty", "not gzip", "corrupt gzip", "truncated", "NaN voxels"])
def test_a_broken_volume_is_one_line(segmenter, tmp_path, capsys, kind):
    volume = np.random.default_rng(0).normal(0, 100, (32, 32, 4)).astype(np.float32)
    bad = tmp_path / "case.nii.gz"
    if kind == "empty":
        bad.write_bytes(b"")
    elif kind == "not gzip":
        bad.write_bytes(b"plain text, named .nii.gz")
    elif kind == "corrupt gzip":
        bad.write_bytes(gzip.compress(b"x" * 1000)[:20] + b"\x00" * 50)
    elif kind == "truncated":
        data = _nifti(tmp_path / "whole.nii.gz", volume).read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    else:
        volume[3, 4, 1] = np.nan
        _nifti(bad, volume)
    out = tmp_path / "out"
    one_error_line(capsys, main(["predict", "--checkpoint", str(segmenter), str(bad), "--out", str(out)]), bad)
    assert not list(out.glob("*.nii*"))
