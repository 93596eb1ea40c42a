"""Volume and street loaders on the real datasets, preprocessing, transforms and the phantoms."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from densevit.data.label_maps import LabelMapDataset, find_pairs, label_lookup
from densevit.data.phantoms import PHANTOM_CLASSES, write_phantoms
from densevit.data.seg_transforms import medical_train, street_train
from densevit.data.volumes import CaseDataset, SliceDataset, load_case, load_nifti_cases
from densevit.errors import UserInputError

BRATS_MODALITIES = ["Flair_subtrMeanDivStd", "T1c_subtrMeanDivStd"]


def test_brats_cases_have_two_channels_and_integer_labels(real_data):
    (case,) = load_nifti_cases(real_data / "brats_mri" / "val", BRATS_MODALITIES, "OTMultiClass")
    folder = real_data / "brats_mri" / "val" / "brats_2013_pat0004_1"
    flair = np.asarray(nib.load(str(folder / "Flair_subtrMeanDivStd.nii.gz")).dataobj)
    raw_label = np.asarray(nib.load(str(folder / "OTMultiClass.nii.gz")).dataobj)
    assert case.image.shape == (2, 240, 240, 155)
    np.testing.assert_array_equal(case.image[0], flair)
    assert case.label.dtype == np.int64 and raw_label.dtype == np.float32
    np.testing.assert_array_equal(case.label, raw_label.astype(np.int64))
    assert set(np.unique(case.label)) <= {0, 1, 2, 3, 4}
    assert case.spacing == (1.0, 1.0, 1.0)


def test_non_integer_label_is_refused(tmp_path):
    (tmp_path / "case").mkdir()
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 2), np.float32), np.eye(4)), str(tmp_path / "case" / "ct.nii.gz"))
    nib.save(nib.Nifti1Image(np.full((4, 4, 2), 0.5, np.float32), np.eye(4)), str(tmp_path / "case" / "seg.nii.gz"))
    with pytest.raises(UserInputError, match=r"seg\.nii\.gz.*non-integer"):
        load_nifti_cases(tmp_path, ["ct"], "seg")


def test_ct_shape_mismatch_names_both_files_and_shapes(real_data):
    root = real_data / "ct_totalseg"
    with pytest.raises(UserInputError) as err:
        load_nifti_cases(root, ["example_ct"], "example_seg", normalisation="ct")
    message = str(err.value)
    assert "example_seg.nii.gz" in message and "example_ct.nii.gz" in message
    assert "(122, 101, 30)" in message and "(122, 101, 112)" in message


def test_ct_window_clips_hounsfield_units_to_unit_range(real_data):
    path = real_data / "ct_totalseg" / "example_ct.nii.gz"
    case = load_case("ct", [path], None, normalisation="ct")
    hu = np.asarray(nib.load(str(path)).dataobj).astype(np.float64)
    expected = (np.minimum(np.maximum(hu, -125), 275) + 125) / 400
    np.testing.assert_allclose(case.image[0], expected, atol=1e-6)
    assert case.image.min() == 0.0 and case.image.max() == 1.0


def test_camvid_void_is_ignored_and_pairs_match(real_data):
    root = real_data / "camvid"
    pairs = find_pairs("camvid", root, "val")
    assert len(pairs) == 10 and all(image.name == label.name and fov is None for image, label, fov in pairs)
    dataset = LabelMapDataset(pairs, label_lookup("camvid", 255, (11,)), street_train((96, 128), 255))
    raw = np.asarray(Image.open(pairs[0][1]))
    assert 11 in raw
    for i in range(3):
        sample = dataset[i]
        assert sample["image"].shape == (3, 96, 128) and sample["mask"].shape == (96, 128)
        values = set(sample["mask"].unique().tolist())
        assert 11 not in values and values <= set(range(11)) | {255}


def test_cityscapes_and_ade20k_label_tables():
    cityscapes = label_lookup("cityscapes", 255)
    assert cityscapes[7] == 0 and cityscapes[26] == 13 and cityscapes[33] == 18
    assert cityscapes[0] == cityscapes[6] == cityscapes[34] == 255
    ade = label_lookup("ade20k", 255)
    assert ade[0] == 255 and ade[1] == 0 and ade[150] == 149


def test_street_transform_keeps_ignore_and_never_invents_labels():
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 3, (120, 160))
    mask[:30] = 255
    image = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    transform = street_train((128, 128), 255, scale=(0.5, 2.0))
    for _ in range(5):
        _, out = transform(image, mask)
        assert set(out.unique().tolist()) <= {0, 1, 2, 255}


def test_medical_transform_is_nearest_on_masks():
    image = np.random.default_rng(0).random((50, 40, 2)).astype(np.float32)
    mask = np.zeros((50, 40), np.int64)
    mask[10:30, 5:25] = 3
    for _ in range(5):
        out_image, out_mask = medical_train((64, 48))(image, mask)
        assert out_image.shape == (2, 64, 48)
        assert set(out_mask.unique().tolist()) <= {0, 3}


def test_phantoms_round_trip_through_the_nifti_loader(tmp_path):
    write_phantoms(tmp_path, 2, seed=3, shape=(32, 32, 8), spacing=(1.5, 1.5, 3.0))
    cases = load_nifti_cases(tmp_path, normalisation="ct")
    assert [c.case_id for c in cases] == ["phantom_000", "phantom_001"]
    for case in cases:
        assert case.image.shape == (1, 32, 32, 8) and 0 <= case.image.min() and case.image.max() <= 1
        assert set(np.unique(case.label)) == set(range(len(PHANTOM_CLASSES)))
        assert case.spacing == (1.5, 1.5, 3.0)
        # organs are brighter than the tissue around them, in order
        means = [case.image[0][case.label == c].mean() for c in range(1, 4)]
        assert means == sorted(means)
    slices = SliceDataset(cases, medical_train((32, 32)), keep_empty=0.0)
    assert all(cases[c].label[..., z].any() for c, z in slices.index)
    whole = CaseDataset(cases)[1]
    assert whole["image"].shape == (1, 32, 32, 8) and torch.equal(whole["label"], torch.from_numpy(cases[1].label))


def test_synapse_npz_slices_and_h5_volumes(tmp_path):
    h5py = pytest.importorskip("h5py")
    from densevit.data.seg_transforms import resize_only
    from densevit.data.volumes import SynapseSliceDataset, load_synapse_cases

    rng = np.random.default_rng(0)
    (tmp_path / "train_npz").mkdir()
    image, label = rng.random((40, 30)).astype(np.float32), rng.integers(0, 9, (40, 30)).astype(np.float32)
    np.savez(tmp_path / "train_npz" / "case0005_slice000.npz", image=image, label=label)
    sample = SynapseSliceDataset(tmp_path / "train_npz", resize_only((40, 30)))[0]
    assert sample["image"].shape == (1, 40, 30) and torch.allclose(sample["image"][0], torch.from_numpy(image))
    assert torch.equal(sample["mask"], torch.from_numpy(label.astype(np.int64)))

    (tmp_path / "test_vol_h5").mkdir()
    volume, labels = rng.random((5, 40, 30)).astype(np.float32), rng.integers(0, 9, (5, 40, 30))
    with h5py.File(tmp_path / "test_vol_h5" / "case0001.npy.h5", "w") as f:
        f["image"], f["label"] = volume, labels
    (case,) = load_synapse_cases(tmp_path / "test_vol_h5")
    assert case.case_id == "case0001" and case.image.shape == (1, 40, 30, 5)
    np.testing.assert_array_equal(case.label[..., 2], labels[2])  # slices along the last axis, as NIfTI
    np.testing.assert_array_equal(case.image[0, ..., 4], volume[4])
