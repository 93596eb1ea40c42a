"""Classification data: ImageFolder trees and ``path,label`` CSVs, timm's transforms, and one-line
errors that name the file and the row."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from densevit.classification.data import read_label_csv
from densevit.config import build_config
from densevit.engine.build import build_task
from densevit.errors import UserInputError


def _picture(path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((40, 30, 3), value, np.uint8)).save(path)


def _config(data: dict, **loss) -> object:
    return build_config({"task": "classification", "model": {"name": "classifier_tiny_cnn"},
                         "data": {"img_size": 32, "crop_pct": 1.0, **data}, "loss": loss,
                         "train": {"iters": 1, "batch_size": 2}})


def test_a_csv_set_reads_labels_by_name_relative_to_the_file(tmp_path):
    for i, name in enumerate(["b", "a", "b", "c"]):
        _picture(tmp_path / "pics" / f"{i}.png", 60 * i)
    (tmp_path / "train.csv").write_text("path,label\n" + "".join(f"pics/{i}.png,{n}\n" for i, n in enumerate("baba")))
    (tmp_path / "val.csv").write_text("label,path\nc,pics/3.png\n")
    with pytest.raises(UserInputError, match=r"val.csv: row 2: label 'c' is not among the classes \(a, b\)"):
        task = build_task(_config({"kind": "csv", "train_csv": str(tmp_path / "train.csv"),
                                   "val_csv": str(tmp_path / "val.csv")}))
        task.build_datasets()
    (tmp_path / "val.csv").write_text("label,path\na,pics/1.png\n")
    task = build_task(_config({"kind": "csv", "train_csv": str(tmp_path / "train.csv"), "val_csv": str(tmp_path / "val.csv")}))
    train, val = task.build_datasets()
    assert task.class_names() == ["a", "b"] and task.cfg.data.class_names == ["a", "b"]  # stored in the run's config
    assert [label for _, label in train.samples] == [1, 0, 1, 0] and val.samples == [(tmp_path / "pics" / "1.png", 0)]
    images, targets = task.collate([val[0], train[0]])
    assert images.shape == (2, 3, 32, 32) and targets["labels"].tolist() == [0, 1]
    # the eval transform: resize to 32 / crop_pct then centre crop, ImageNet normalisation of a flat grey
    expected = (60 / 255 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(images[0].mean(dim=(1, 2)), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("text, message", [
    ("file,label\n", "row 1: expected a header with columns path and label"),
    ("path,label\nx.png,\n", "row 2: expected a path and a label"),
    ("path,label\n\nmissing.png,a\n", "row 3: image .*missing.png not found"),
])
def test_bad_csv_rows_name_the_file_and_row(tmp_path, text, message):
    (tmp_path / "set.csv").write_text(text)
    with pytest.raises(UserInputError, match=f"set.csv: {message}"):
        read_label_csv(tmp_path / "set.csv")


def test_a_folder_tree_sorts_classes_and_refuses_unknown_val_classes(tmp_path):
    for split, name, value in [("train", "zebra", 10), ("train", "ant", 20), ("val", "ant", 30), ("val", "cow", 40)]:
        _picture(tmp_path / split / name / f"{value}.jpg", value)
    task = build_task(_config({"kind": "folder", "root": str(tmp_path)}))
    assert task.class_names() == ["ant", "zebra"]
    with pytest.raises(UserInputError, match=r"val/cow: class 'cow' is not among the training classes"):
        task.build_datasets()


def test_mixup_needs_an_even_batch_and_gives_soft_targets(tmp_path):
    for name in ("a", "b"):
        _picture(tmp_path / "train" / name / "0.png", 9)
    cfg = _config({"kind": "folder", "root": str(tmp_path), "val_split": ""}, mixup_alpha=0.4, label_smoothing=0.1)
    task = build_task(cfg)
    model, criterion = task.build_model(), task.build_criterion()
    outputs = task.train_forward(model, torch.randn(2, 3, 32, 32), {"labels": torch.tensor([0, 1])})
    assert outputs["logits"].shape == (2, 2) and torch.allclose(outputs["soft_targets"].sum(1), torch.ones(2))
    assert outputs["soft_targets"].min() >= 0.05 - 1e-6  # smoothing 0.1 over 2 classes
    soft_ce = -(outputs["soft_targets"] * outputs["logits"].log_softmax(-1)).sum(-1).mean()
    torch.testing.assert_close(criterion(outputs, {})["loss"], soft_ce)
    cfg.train.batch_size = 3
    with pytest.raises(UserInputError, match="train.batch_size: mixup / cutmix .* even batch size, got 3"):
        build_task(cfg).train_forward(model, torch.randn(3, 3, 32, 32), {"labels": torch.tensor([0, 1, 0])})


def test_a_randaugment_policy_that_can_posterize_to_zero_bits_is_refused_up_front():
    from PIL import ImageOps

    from densevit.classification.config import ClassificationDataConfig
    from densevit.classification.data import build_transform
    from densevit.errors import ConfigError

    try:
        ImageOps.posterize(Image.new("RGB", (1, 1)), 0)
        pytest.skip("this Pillow posterizes to 0 bits")
    except ValueError:
        pass
    with pytest.raises(ConfigError, match="rand-m9-mstd0.5-inc1-mmax9"):
        build_transform(ClassificationDataConfig(auto_augment="rand-m9-mstd0.5-inc1"), training=True)
    capped = build_transform(ClassificationDataConfig(img_size=32, auto_augment="rand-m9-mstd0.5-inc1-mmax9"), training=True)
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 40, 3), dtype=np.uint8))
    assert all(capped(picture).shape == (3, 32, 32) for _ in range(300))
