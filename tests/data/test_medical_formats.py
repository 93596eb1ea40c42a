"""NRRD, MetaImage and DICOM series volumes read as NIfTI reads them, and predictions written back
on the input's grid and in its format.

One physical volume (anisotropic spacing, a rotated direction, an origin away from zero) is saved
by SimpleITK as NIfTI, NRRD, MetaImage and a DICOM series; nibabel's reading of the NIfTI file is
the reference that every other format must match, voxel for voxel and affine for affine.
"""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from medical_helpers import write_dicom_series
from scipy.spatial.transform import Rotation

from densevit.cli import main
from densevit.config import build_config
from densevit.data.pairing import pair_label_files
from densevit.data.phantoms import make_phantom, write_phantoms
from densevit.data.sitk_volumes import SITK_SUFFIXES
from densevit.data.volume_readers import read_nifti, read_volume
from densevit.data.volumes import load_nifti_cases
from densevit.engine.build import build_model, build_task
from densevit.engine.checkpoint import save_checkpoint
from densevit.evaluation.files import read_label_file, score_medical_files
from densevit.inference.volume_segmentation import volume_inputs
from densevit.inference.writers import write_label_volume

sitk = pytest.importorskip("SimpleITK")

SPACING = (0.8, 0.6, 2.5)
ORIGIN = (-120.5, 35.25, 10.0)  # exact in float32, as NIfTI stores it
ROTATED = Rotation.from_euler("xyz", [20, -10, 30], degrees=True).as_matrix()  # a proper rotation: DICOM can hold it
FLIPPED = np.diag([1.0, -1.0, -1.0]) @ ROTATED @ np.diag([1.0, 1.0, -1.0])  # det -1: slices stacked "backwards"
SHAPE = (40, 36, 4)  # x, y, z
TINY_MODEL = dict(img_size=[32, 32], hidden=32, depth=1, num_heads=2, mlp_dim=64, resnet_layers=[1, 1, 1],
                  resnet_width=32, head_channels=16, decoder_channels=[16, 8, 8, 8])
CONFIG = {"task": "volume_segmentation", "name": "formats", "seed": 0,
          "model": {"name": "transunet_r50_vitb16", "num_classes": 4, "kwargs": TINY_MODEL},
          "data": {"kind": "phantoms", "root": "phantoms", "normalisation": "ct", "crop_size": [32, 32]}}


def phantom_image(direction: np.ndarray = ROTATED, seed: int = 0) -> tuple[object, np.ndarray]:
    """A CT phantom as a SimpleITK image on a rotated, anisotropic grid, and its labels [X,Y,Z]."""
    ct, label = make_phantom(np.random.default_rng(seed), SHAPE)
    image = sitk.GetImageFromArray(ct.transpose(2, 1, 0))  # SimpleITK arrays are (z, y, x)
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    image.SetDirection(direction.flatten().tolist())
    return image, label


def save_all_formats(image, folder: Path) -> dict[str, Path]:
    """The same volume as ``case.nii.gz`` and ``case`` + every SimpleITK suffix."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {suffix: folder / f"case{suffix}" for suffix in (".nii.gz", *SITK_SUFFIXES)}
    for path in paths.values():
        sitk.WriteImage(image, str(path))
    return paths


def assert_same_geometry(image, reference, tol: float = 1e-6) -> None:
    assert np.allclose(image.GetSpacing(), reference.GetSpacing(), rtol=0, atol=tol)
    assert np.allclose(image.GetOrigin(), reference.GetOrigin(), rtol=0, atol=tol)
    assert np.allclose(image.GetDirection(), reference.GetDirection(), rtol=0, atol=tol)


def dicom_image(folder: Path):
    return sitk.ReadImage(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))


# ----------------------------------------------------------------------------- reading


@pytest.mark.parametrize("direction", [ROTATED, FLIPPED], ids=["rotated", "flipped"])
def test_every_format_reads_as_nibabel_reads_the_nifti(tmp_path, direction):
    image, _ = phantom_image(direction)
    paths = save_all_formats(image, tmp_path)
    reference, nifti = read_nifti(paths[".nii.gz"])  # nibabel: the NIfTI reference
    assert reference.shape == SHAPE
    for suffix in SITK_SUFFIXES:
        voxels, geometry = read_volume(paths[suffix])
        assert voxels.dtype == reference.dtype and np.array_equal(voxels, reference), suffix
        assert np.allclose(geometry.affine, nifti.affine, rtol=0, atol=1e-5), suffix  # NIfTI stores float32
        assert np.allclose(geometry.spacing, nifti.header.get_zooms(), rtol=0, atol=1e-6), suffix


def test_a_dicom_series_reads_as_nibabel_reads_the_nifti(tmp_path):
    image, _ = phantom_image()
    series = write_dicom_series(image, tmp_path / "series")
    sitk.WriteImage(image, str(tmp_path / "case.nii.gz"))
    reference, nifti = read_nifti(tmp_path / "case.nii.gz")
    voxels, geometry = read_volume(series)
    assert np.array_equal(voxels, reference)
    assert np.allclose(geometry.affine, nifti.affine, rtol=0, atol=1e-5)
    # the voxel at the first slice's corner lies where that file's ImagePositionPatient (LPS) says
    first = sitk.ReadImage(str(sorted(series.iterdir())[-1]))  # written last: slice k = 0
    lps = np.array(first.GetMetaData("0020|0032").split("\\"), dtype=float)
    assert np.allclose(geometry.affine[:3, 3], lps * [-1, -1, 1], atol=1e-6)


def test_decathlon_cases_in_metaimage_load_as_their_nifti_twins(tmp_path):
    write_phantoms(tmp_path / "nifti", 2, seed=3, shape=(24, 20, 4), spacing=(0.7, 0.9, 3.0))
    for folder in ("imagesTr", "labelsTr"):
        (tmp_path / "mha" / folder).mkdir(parents=True)
        for path in (tmp_path / "nifti" / folder).iterdir():
            sitk.WriteImage(sitk.ReadImage(str(path)), str(tmp_path / "mha" / folder / path.name.replace(".nii.gz", ".mha")))
    nifti = load_nifti_cases(tmp_path / "nifti", normalisation="ct", num_classes=4)
    mha = load_nifti_cases(tmp_path / "mha", normalisation="ct", num_classes=4)
    assert [c.case_id for c in mha] == [c.case_id for c in nifti] == ["phantom_000", "phantom_001"]
    for a, b in zip(mha, nifti):
        assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)
        assert np.allclose(a.affine, b.affine, atol=1e-6) and np.allclose(a.spacing, b.spacing)


# ----------------------------------------------------------------------------- writing


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_label_volumes_keep_the_input_grid(tmp_path, suffix):
    image, labels = phantom_image(FLIPPED)
    source = save_all_formats(image, tmp_path / "in")[suffix]
    _, geometry = read_volume(source)
    written = write_label_volume(labels, geometry.affine, tmp_path / f"labels{suffix}")
    back = sitk.ReadImage(str(written))
    assert_same_geometry(back, sitk.ReadImage(str(source)))
    assert np.array_equal(sitk.GetArrayFromImage(back), labels.transpose(2, 1, 0))


def test_labels_of_a_dicom_series_are_nifti_on_the_series_grid(tmp_path):
    image, labels = phantom_image()
    series = write_dicom_series(image, tmp_path / "series")
    _, geometry = read_volume(series)
    written = write_label_volume(labels, geometry.affine, tmp_path / "labels.nii.gz")
    assert_same_geometry(sitk.ReadImage(str(written)), dicom_image(series))
    assert nib.load(str(written)).header.get_xyzt_units()[0] == "mm"


# ----------------------------------------------------------------------------- predict, end to end


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny, untrained volume segmenter; without the head's bias its labels follow the voxels."""
    cfg = build_config(CONFIG)
    task = build_task(cfg)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "model.pth"
    model = build_model(task)
    torch.nn.init.zeros_(model.head.bias)
    save_checkpoint({"model": model.state_dict(), "config": cfg.to_dict(),
                     "class_names": task.class_names()}, path)
    return path


def test_labels_go_where_the_rules_say_in_the_inputs_format(tmp_path):
    image, _ = phantom_image()
    (tmp_path / "imagesTs").mkdir()
    files = [tmp_path / "a.nhdr", tmp_path / "b.mhd", tmp_path / "imagesTs" / "c_0000.nrrd", tmp_path / "d.nii"]
    for path in files:
        sitk.WriteImage(image, str(path))
    series = write_dicom_series(image, tmp_path / "Series 1")
    found = volume_inputs(build_task(build_config(CONFIG)), [*files, series])
    assert [(case, target.as_posix()) for case, _, target in found] == [
        ("a", "a.nrrd"), ("b", "b.mha"), ("c", "c.nrrd"), ("d", "d.nii.gz"), ("Series 1", "Series 1.nii.gz")]


def test_predict_on_nrrd_mha_and_dicom_gives_the_nifti_labels_on_the_input_grid(checkpoint, tmp_path):
    image, _ = phantom_image()
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("as_nifti.nii.gz", "as_nrrd.nrrd", "as_mha.mha"):
        sitk.WriteImage(image, str(inputs / name))
    series = write_dicom_series(image, inputs / "as_dicom")
    flipped = sitk.Flip(image, [True, False, False], flipAboutOrigin=False)  # other voxels, same grid
    sitk.WriteImage(flipped, str(inputs / "mirrored.nii.gz"))
    out = tmp_path / "out"
    names = ["as_nifti.nii.gz", "as_nrrd.nrrd", "as_mha.mha", "as_dicom", "mirrored.nii.gz"]
    assert main(["predict", "--checkpoint", str(checkpoint), *(str(inputs / n) for n in names),
                 "--out", str(out), "--no-pictures"]) == 0
    written = {"as_nrrd.nrrd": "as_nrrd.nrrd", "as_mha.mha": "as_mha.mha", "as_dicom": "as_dicom.nii.gz"}
    assert sorted(p.name for p in out.iterdir()) == sorted([*written.values(), "as_nifti.nii.gz", "mirrored.nii.gz"])
    nifti_labels = sitk.ReadImage(str(out / "as_nifti.nii.gz"))
    expected = sitk.GetArrayFromImage(nifti_labels)
    assert len(np.unique(expected)) > 1  # labels that tell a mirrored or transposed input apart
    assert not np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out / "mirrored.nii.gz"))), expected)
    assert_same_geometry(nifti_labels, image, tol=1e-5)  # NIfTI: float32 geometry
    for source, label_file in written.items():
        labels = sitk.ReadImage(str(out / label_file))
        reference = dicom_image(series) if source == "as_dicom" else sitk.ReadImage(str(inputs / source))
        assert_same_geometry(labels, reference)
        assert np.array_equal(sitk.GetArrayFromImage(labels), expected), source


# ----------------------------------------------------------------------------- score


def test_score_reads_nrrd_labels_as_their_nifti_twins(tmp_path):
    _, gt = phantom_image()
    pred = np.where(np.roll(gt, 2, axis=0) > 0, np.roll(gt, 2, axis=0), 0)
    scores = {}
    for suffix in (".nii.gz", ".nrrd"):
        for name, labels in (("gt", gt), ("pred", pred)):
            image = sitk.GetImageFromArray(labels.transpose(2, 1, 0))
            image.SetSpacing(SPACING)
            image.SetDirection(ROTATED.flatten().tolist())
            (tmp_path / suffix / name).mkdir(parents=True)
            sitk.WriteImage(image, str(tmp_path / suffix / name / f"case{suffix}"))
        voxels, spacing = read_label_file(tmp_path / suffix / "gt" / f"case{suffix}")
        assert np.array_equal(voxels, gt) and np.allclose(spacing, SPACING)
        pairs = pair_label_files(tmp_path / suffix / "gt", tmp_path / suffix / "pred")  # densevit score's suffixes
        scores[suffix] = score_medical_files(pairs, num_classes=4)
    nifti, nrrd = (json.loads(json.dumps(scores[s], default=float)) for s in (".nii.gz", ".nrrd"))
    assert nrrd["mean_dice"] == nifti["mean_dice"] > 0.3
    assert nrrd["mean_hd95"] == pytest.approx(nifti["mean_hd95"], rel=1e-6)
