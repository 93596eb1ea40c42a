"""``densevit predict`` meets malformed DICOM folders, NRRD and MetaImage volumes: one error line
naming the file or folder and what was expected, exit code 2, no traceback, nothing written."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from malformed_helpers import error_line
from medical_helpers import write_dicom_series

from densevit.config import build_config
from densevit.engine.build import build_model, build_task
from densevit.engine.checkpoint import save_checkpoint

sitk = pytest.importorskip("SimpleITK")

TINY_MODEL = dict(img_size=[32, 32], hidden=32, depth=1, num_heads=2, mlp_dim=64, resnet_layers=[1, 1, 1],
                  resnet_width=32, head_channels=16, decoder_channels=[16, 8, 8, 8])


def _checkpoint(path: Path, in_chans: int = 1, **data) -> Path:
    cfg = build_config({"task": "volume_segmentation", "name": "bad_formats",
                        "model": {"name": "transunet_r50_vitb16", "num_classes": 4,
                                  "kwargs": {**TINY_MODEL, "in_chans": in_chans}},
                        "data": {"kind": "phantoms", "root": "phantoms", "crop_size": [32, 32], **data}})
    task = build_task(cfg)
    save_checkpoint({"model": build_model(task).state_dict(), "config": cfg.to_dict(),
                     "class_names": task.class_names()}, path)
    return path


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory) -> Path:
    return _checkpoint(tmp_path_factory.mktemp("seg") / "model.pth")


def volume(size=(12, 10, 4), origin=(0.0, 0.0, 0.0), components: int = 1):
    """A small SimpleITK image of ``size`` (x, y, z...) with random voxels."""
    shape = tuple(reversed(size)) + ((components,) if components > 1 else ())
    image = sitk.GetImageFromArray(np.random.default_rng(0).normal(0, 100, shape).astype(np.float32),
                                   isVector=components > 1)
    image.SetOrigin((*origin, 0.0)[: len(size)])
    return image


def dicom_series(folder: Path, uid: str, slices: int) -> None:
    """``slices`` DICOM files of series ``uid`` in ``folder``, stacked along z."""
    write_dicom_series(sitk.Cast(volume((8, 8, slices)), sitk.sitkInt16), folder, uid)


def predict(cli, checkpoint: Path, *inputs: Path, out: Path) -> str:
    rc, err = cli("predict", "--checkpoint", str(checkpoint), *map(str, inputs), "--out", str(out))
    line = error_line(rc, err, inputs[0])
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]  # nothing written
    return line


def truncated(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


# ----------------------------------------------------------------------------- DICOM folders


def test_a_folder_of_dcm_files_that_are_not_dicom(segmenter, cli, tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    (folder / "1.dcm").write_text("not a DICOM file")
    line = predict(cli, segmenter, folder, out=tmp_path / "out")
    assert "no DICOM series" in line


def test_a_folder_of_two_series_lists_them(segmenter, cli, tmp_path):
    dicom_series(tmp_path / "study", "1.2.3.4.1", 3)
    dicom_series(tmp_path / "study", "1.2.3.4.2", 2)
    line = predict(cli, segmenter, tmp_path / "study", out=tmp_path / "out")
    assert "1.2.3.4.1 (3 slices)" in line and "1.2.3.4.2 (2 slices)" in line and "one series per folder" in line


# ----------------------------------------------------------------------------- NRRD and MetaImage files


@pytest.mark.parametrize("suffix, kind", [(".nrrd", "NRRD"), (".mha", "MetaImage")])
def test_a_truncated_or_empty_file(segmenter, cli, tmp_path, suffix, kind):
    bad = tmp_path / f"case{suffix}"
    sitk.WriteImage(volume(), str(bad))
    line = predict(cli, segmenter, truncated(bad), out=tmp_path / "out")
    assert f"cannot read the {kind} file" in line
    bad.write_bytes(b"")
    assert "the file is empty" in predict(cli, segmenter, bad, out=tmp_path / "out")


def test_a_file_of_another_kind_named_nrrd(segmenter, cli, tmp_path):
    bad = tmp_path / "case.nrrd"
    bad.write_text("plain text, named .nrrd")
    assert "cannot read the NRRD file" in predict(cli, segmenter, bad, out=tmp_path / "out")


@pytest.mark.parametrize("suffix, field", [(".mhd", "ElementDataFile"), (".nhdr", "data file")])
def test_a_detached_header_without_its_voxel_file(segmenter, cli, tmp_path, suffix, field):
    header = tmp_path / f"case{suffix}"
    sitk.WriteImage(volume(), str(header))
    (tmp_path / "case.raw").unlink()
    line = predict(cli, segmenter, header, out=tmp_path / "out")
    assert f"{tmp_path / 'case.raw'} ({field}) is missing" in line


@pytest.mark.parametrize("image, expected", [
    (lambda: volume((12, 10)), "expected a 3D volume, got a 2D image of size 12x10"),
    (lambda: volume((6, 5, 4, 2)), "expected a 3D volume, got a 4D image of size 6x5x4x2"),
    (lambda: volume(components=2), "expected one value per voxel, got 2"),
], ids=["2D", "4D", "vector"])
def test_an_image_that_is_not_one_3d_volume(segmenter, cli, tmp_path, image, expected):
    bad = tmp_path / "case.nrrd"
    sitk.WriteImage(image(), str(bad))
    assert expected in predict(cli, segmenter, bad, out=tmp_path / "out")


def test_nan_voxels_in_an_mha(segmenter, cli, tmp_path):
    image = volume()
    image[3, 4, 1] = float("nan")
    bad = tmp_path / "case.mha"
    sitk.WriteImage(image, str(bad))
    assert "1 of 480 voxel(s) are not finite" in predict(cli, segmenter, bad, out=tmp_path / "out")


def test_modalities_on_different_grids(cli, tmp_path):
    checkpoint = _checkpoint(tmp_path / "two.pth", in_chans=2, modalities=["t1", "t2"], label_name="seg")
    case = tmp_path / "cases" / "case1"
    case.mkdir(parents=True)
    sitk.WriteImage(volume(), str(case / "t1.nrrd"))
    sitk.WriteImage(volume(origin=(0.0, 0.0, 5.0)), str(case / "t2.nrrd"))
    rc, err = cli("predict", "--checkpoint", str(checkpoint), str(tmp_path / "cases"), "--out", str(tmp_path / "out"))
    line = error_line(rc, err, case / "t2.nrrd", case / "t1.nrrd")
    assert "origin (0.0, 0.0, 5.0) (RAS)) differs in origin from" in line and "on one grid" in line


def test_without_simpleitk_the_error_names_the_extra(segmenter, cli, tmp_path, monkeypatch):
    path = tmp_path / "case.nrrd"
    sitk.WriteImage(volume(), str(path))
    monkeypatch.setitem(sys.modules, "SimpleITK", None)  # what an install without the extra gives
    rc, err = cli("predict", "--checkpoint", str(segmenter), str(path), "--out", str(tmp_path / "out"))
    assert "pip install 'densevit[medical]'" in error_line(rc, err, path)
