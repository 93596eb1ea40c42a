"""``volume_segmentation`` meets malformed files (NIfTI cases, Synapse .npz slices and .h5 volumes)
with one error line naming the file, exit code 2 and no traceback; ``data.bad_samples: drop``
leaves bad cases out with one warning line that counts them."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import yaml
from malformed_helpers import error_line, warnings_of

from densevit.data.phantoms import write_phantoms

# A TransUNet small enough that building it and one CPU step take about a second.
TINY_MODEL = dict(img_size=[32, 32], hidden=32, depth=1, num_heads=2, mlp_dim=64, resnet_layers=[1, 1, 1],
                  resnet_width=32, head_channels=16, decoder_channels=[16, 8, 8, 8])
ONE_STEP = dict(iters=1, batch_size=2, eval_every=0, checkpoint_every=0, final_eval="skip", log_every=1,
                progress=False, tensorboard=False, plot_curves=False, precision="fp32", num_workers=0)
SHAPE = (32, 32, 6)


# ----------------------------------------------------------------------------- helpers


def write_config(folder: Path, data: dict[str, Any], num_classes: int = 4, **train: Any) -> str:
    config = {"task": "volume_segmentation", "name": "malformed", "seed": 0,
              "model": {"name": "transunet_r50_vitb16", "num_classes": num_classes, "kwargs": TINY_MODEL},
              "data": {"crop_size": [32, 32], "augment": "none", **data},
              "optim": {"name": "adamw", "lr": 1e-3}, "train": {**ONE_STEP, **train}}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.fixture
def cases(tmp_path) -> Path:
    """Three training and one validation phantom in the Decathlon layout (imagesTr / labelsTr)."""
    write_phantoms(tmp_path / "train", 3, seed=0, shape=SHAPE)
    write_phantoms(tmp_path / "val", 1, seed=1, shape=SHAPE)
    return tmp_path


def nifti_config(root: Path, **data: Any) -> str:
    return write_config(root, {"kind": "nifti", "train_root": str(root / "train"), "val_root": str(root / "val"),
                               "normalisation": "ct", **data})


def label_of(root: Path, case: int = 1, split: str = "train") -> Path:
    return root / split / "labelsTr" / f"phantom_{case:03d}.nii.gz"


def image_of(root: Path, case: int = 1, split: str = "train") -> Path:
    return root / split / "imagesTr" / f"phantom_{case:03d}.nii.gz"


def rewrite(path: Path, change) -> None:
    """Save the NIfTI file ``path`` again with ``change(voxels)`` as its voxels."""
    nifti = nib.load(str(path))
    nib.save(nib.Nifti1Image(change(np.asarray(nifti.dataobj).copy()), nifti.affine), str(path))


def with_value(value: float, dtype=None):
    def change(voxels: np.ndarray) -> np.ndarray:
        voxels = voxels.astype(dtype or voxels.dtype)
        voxels[3, 4, 2] = voxels[5, 6, 1] = value
        return voxels
    return change


# ----------------------------------------------------------------------------- NIfTI cases


def test_the_clean_cases_train(cases, cli):
    rc, err = cli("train", nifti_config(cases))
    assert rc == 0 and not warnings_of(err), err


def test_label_values_above_num_classes_name_the_file_values_and_range(cases, cli):
    rewrite(label_of(cases), with_value(40))
    line = error_line(*cli("train", nifti_config(cases)), label_of(cases), "40", "2 voxel(s)", "0..3", "255")
    assert "model.num_classes" in line


def test_label_values_above_num_classes_in_the_validation_set(cases, cli):
    rewrite(label_of(cases, 0, "val"), with_value(7))
    error_line(*cli("train", nifti_config(cases)), label_of(cases, 0, "val"), "7")


def test_the_ignore_index_is_a_valid_label_value(cases, cli):
    rewrite(label_of(cases), with_value(9))
    rc, err = cli("train", nifti_config(cases, ignore_index=9))
    assert rc == 0, err


@pytest.mark.parametrize("damage", ["empty", "not gzip", "corrupt gzip", "truncated"])
def test_unreadable_nifti_files_name_the_file(cases, cli, damage):
    path = label_of(cases) if damage == "truncated" else image_of(cases)
    data = path.read_bytes()
    path.write_bytes({"empty": b"", "not gzip": b"not a volume", "truncated": data[: len(data) // 2],
                      "corrupt gzip": data[:40] + bytes(200) + data[240:]}[damage])
    line = error_line(*cli("train", nifti_config(cases)), path)
    assert "cannot read the NIfTI file" in line
    if damage == "empty":
        assert "0 bytes" in line


def test_nan_voxels_are_refused_on_read_with_their_count(cases, cli):
    rewrite(image_of(cases), with_value(np.nan, np.float32))
    error_line(*cli("train", nifti_config(cases)), image_of(cases), "2 of", "not finite")


def test_non_finite_and_fractional_labels_are_refused(cases, cli):
    rewrite(label_of(cases), with_value(np.inf, np.float32))
    error_line(*cli("train", nifti_config(cases)), label_of(cases), "2 non-finite")
    rewrite(label_of(cases), lambda v: np.nan_to_num(v, posinf=0.5))
    error_line(*cli("train", nifti_config(cases)), label_of(cases), "non-integer values 0.5")


def test_image_and_label_shapes_that_differ_name_both_files_and_shapes(cases, cli):
    rewrite(label_of(cases), lambda v: v[:, :, :4])
    error_line(*cli("train", nifti_config(cases)), label_of(cases), image_of(cases), "(32, 32, 4)", "(32, 32, 6)")


def test_two_modalities_into_a_three_channel_model_is_refused_at_open(cases, cli):
    rewrite(image_of(cases), lambda v: np.stack([v, v], axis=-1))
    error_line(*cli("train", nifti_config(cases)), image_of(cases), "2 image channel(s)", "takes 3")


def test_case_folders_with_a_missing_modality_name_the_folder(tmp_path, cli):
    for case in ("a", "b"):
        (tmp_path / "cases" / case).mkdir(parents=True)
        nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.int16), np.eye(4)), str(tmp_path / "cases" / case / "ct.nii.gz"))
        nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.uint8), np.eye(4)), str(tmp_path / "cases" / case / "seg.nii.gz"))
    (tmp_path / "cases" / "b" / "ct.nii.gz").unlink()
    cfg = write_config(tmp_path, {"kind": "nifti", "train_root": str(tmp_path / "cases"), "modalities": ["ct"],
                                  "label_name": "seg"})
    error_line(*cli("train", cfg), tmp_path / "cases" / "b", "ct")


def test_a_validation_case_without_labels_is_refused_before_training(cases, cli):
    label_of(cases, 0, "val").unlink()
    error_line(*cli("train", nifti_config(cases)), image_of(cases, 0, "val"), "no label file")


def test_drop_leaves_bad_cases_out_with_one_warning(cases, cli):
    rewrite(label_of(cases, 1), with_value(40))
    image_of(cases, 2).write_bytes(b"")
    rc, err = cli("train", nifti_config(cases, bad_samples="drop"))
    assert rc == 0, err
    (warning,) = warnings_of(err)
    assert "dropped 2 of 3 cases" in warning and str(label_of(cases, 1)) in warning and str(image_of(cases, 2)) in warning
    assert "Traceback" not in err


def test_drop_with_every_case_bad_is_an_error(cases, cli):
    for case in range(3):
        rewrite(label_of(cases, case), with_value(40))
    error_line(*cli("train", nifti_config(cases, bad_samples="drop")), "all 3 cases are bad", label_of(cases, 0))


def test_config_values_out_of_range_name_the_key(cases, cli):
    error_line(*cli("train", nifti_config(cases, keep_empty_slices=1.5)), "data.keep_empty_slices", "1.5")
    error_line(*cli("train", nifti_config(cases, ignore_index=2)), "data.ignore_index", "0..3")
    error_line(*cli("train", nifti_config(cases, class_names=["a", "b"])), "data.class_names", "expected 4")


# ----------------------------------------------------------------------------- evaluate and predict


@pytest.fixture
def checkpoint(cases, cli, tmp_path) -> tuple[str, Path]:
    cfg = nifti_config(cases)
    rc, err = cli("train", cfg)
    assert rc == 0, err
    return cfg, next(tmp_path.glob("run*/last.pth"))


def test_evaluate_refuses_a_bad_validation_case(checkpoint, cases, cli):
    cfg, weights = checkpoint
    rewrite(label_of(cases, 0, "val"), with_value(40))
    error_line(*cli("evaluate", cfg, "--checkpoint", str(weights)), label_of(cases, 0, "val"), "40")


@pytest.mark.parametrize("damage", ["empty", "nan", "corrupt gzip"])
def test_predict_refuses_a_bad_volume(checkpoint, cases, cli, tmp_path, damage):
    _, weights = checkpoint
    bad = tmp_path / "bad.nii.gz"
    shutil.copy(image_of(cases, 0, "val"), bad)
    if damage == "nan":
        rewrite(bad, with_value(np.nan, np.float32))
    else:
        data = bad.read_bytes()
        bad.write_bytes(b"" if damage == "empty" else data[:40] + bytes(200) + data[240:])
    error_line(*cli("predict", "--checkpoint", str(weights), "--out", str(tmp_path / "out"), str(bad)), bad)


# ----------------------------------------------------------------------------- Synapse files


@pytest.fixture
def synapse(tmp_path) -> Path:
    """TransUNet's layout: ``train_npz/caseX_sliceY.npz`` and ``test_vol_h5/caseX.npy.h5``."""
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(0)
    (tmp_path / "train_npz").mkdir()
    (tmp_path / "test_vol_h5").mkdir()
    for i in range(3):
        np.savez(tmp_path / "train_npz" / f"case0005_slice{i:03d}.npz", image=rng.random((32, 32)).astype(np.float32),
                 label=rng.integers(0, 4, (32, 32)).astype(np.float32))
    with h5py.File(tmp_path / "test_vol_h5" / "case0001.npy.h5", "w") as f:
        f["image"], f["label"] = rng.random((3, 32, 32)).astype(np.float32), rng.integers(0, 4, (3, 32, 32))
    return tmp_path


def synapse_config(root: Path, train: dict | None = None, **data: Any) -> str:
    return write_config(root, {"kind": "synapse", "train_root": str(root / "train_npz"),
                               "val_root": str(root / "test_vol_h5"), **data}, **(train or {}))


def test_clean_synapse_files_train(synapse, cli):
    rc, err = cli("train", synapse_config(synapse))
    assert rc == 0, err


@pytest.mark.parametrize("damage", ["no label", "empty", "corrupt zip"])
def test_bad_npz_slices_name_the_file_and_the_missing_array(synapse, cli, damage):
    path = synapse / "train_npz" / "case0005_slice001.npz"
    if damage == "no label":
        np.savez(path, image=np.zeros((32, 32), np.float32))
    else:
        path.write_bytes(b"" if damage == "empty" else b"PK\x03\x04" + bytes(100))
    line = error_line(*cli("train", synapse_config(synapse)), path)
    if damage == "no label":
        assert "'label'" in line and "the file has: image" in line


def test_bad_h5_volume_names_the_file_and_the_missing_dataset(synapse, cli):
    h5py = pytest.importorskip("h5py")
    path = synapse / "test_vol_h5" / "case0001.npy.h5"
    with h5py.File(path, "w") as f:
        f["label"] = np.zeros((3, 32, 32), np.uint8)
    error_line(*cli("train", synapse_config(synapse)), path, "'image'", "the file has: label")


def test_drop_leaves_a_bad_npz_slice_out(synapse, cli):
    path = synapse / "train_npz" / "case0005_slice001.npz"
    path.write_bytes(b"")
    rc, err = cli("train", synapse_config(synapse, bad_samples="drop"))
    assert rc == 0, err
    (warning,) = warnings_of(err)
    assert "dropped 1 of 3 slices" in warning and str(path) in warning


def _bad_label_slices(root: Path) -> Path:
    for path in sorted((root / "train_npz").glob("*.npz")):
        np.savez(path, image=np.zeros((32, 32), np.float32), label=np.full((32, 32), 40, np.uint8))
    return root / "train_npz"


def test_npz_label_values_are_checked_as_each_slice_is_read(synapse, cli):
    folder = _bad_label_slices(synapse)
    error_line(*cli("train", synapse_config(synapse)), folder, "label value(s) 40", "0..3")


def test_npz_label_values_met_in_a_loader_worker_give_the_same_line(synapse, cli):
    folder = _bad_label_slices(synapse)
    error_line(*cli("train", synapse_config(synapse, train={"num_workers": 2})), folder, "label value(s) 40")
