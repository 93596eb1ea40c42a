"""The segmentation task end to end on real data: load, train a few steps, evaluate, predict."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from densevit.cli import main
from densevit.config import build_config
from densevit.data.phantoms import write_phantoms
from densevit.engine.build import build_task
from densevit.engine.checkpoint import LAST
from densevit.engine.trainer import train
from densevit.errors import ConfigError
from densevit.inference import PredictOptions, Predictor

TINY_HYBRID = dict(img_size=[64, 64], hidden=64, depth=1, num_heads=2, mlp_dim=128, resnet_layers=[1, 1, 1],
                   resnet_width=32, head_channels=32, decoder_channels=[32, 16, 16, 8])
LOOP = dict(iters=3, batch_size=4, eval_every=0, checkpoint_every=0, precision="fp32", progress=False, tensorboard=False)


def _config(model: dict, data: dict, **train) -> object:
    return build_config({
        "task": "segmentation", "name": "test", "model": model, "data": data,
        "optim": {"name": "adamw", "lr": 1e-3}, "train": {**LOOP, **train},
    })


def test_brats_two_channel_train_evaluate_predict(real_data, tmp_path):
    brats = real_data / "brats_mri"
    cfg = _config(
        {"name": "transunet_r50_vitb16", "num_classes": 5, "kwargs": {**TINY_HYBRID, "in_chans": 2}},
        {"kind": "nifti", "train_root": str(brats / "train"), "val_root": str(brats / "val"),
         "modalities": ["Flair_subtrMeanDivStd", "T1c_subtrMeanDivStd"], "label_name": "OTMultiClass",
         "crop_size": [64, 64], "keep_empty_slices": 0.0, "eval_chunk": 64},
    )
    metrics = train(cfg, tmp_path / "run", device="cpu")
    assert {"mean_dice", "mean_hd95", "dice/1", "hd95/4"} <= set(metrics)
    assert {row["case"] for row in metrics["cases"]} == {"brats_2013_pat0004_1"}

    case = brats / "val" / "brats_2013_pat0004_1"
    Predictor.from_checkpoint(tmp_path / "run" / LAST, PredictOptions(batch_size=32)).predict(
        [brats / "val"], tmp_path / "pred")  # a folder of case folders: mirrored case by case
    written = nib.load(str(tmp_path / "pred" / "brats_2013_pat0004_1" / "OTMultiClass.nii.gz"))
    source = nib.load(str(case / "Flair_subtrMeanDivStd.nii.gz"))
    assert written.shape == source.shape and np.allclose(written.affine, source.affine)
    assert (tmp_path / "pred" / "pictures" / "brats_2013_pat0004_1.png").is_file()

    # predict, then score the files as they lie: evaluate's numbers, in the same layout
    out = tmp_path / "scores.json"
    assert main(["score", "medical", str(brats / "val"), str(tmp_path / "pred"), "--num-classes", "5",
                 "--out", str(out)]) == 0
    scored = json.loads(out.read_text())
    assert scored.keys() >= metrics.keys() - {"cases"}
    for key in ("mean_dice", "mean_hd95", "dice/1", "dice/4", "hd95/2"):
        assert scored[key] == pytest.approx(metrics[key], rel=0, abs=0, nan_ok=True) or (
            scored[key] is None and np.isnan(metrics[key])), key
    assert [(r["case"], r["class"], r["dice"]) for r in scored["cases"]] == [
        (r["case"], r["class"], r["dice"]) for r in metrics["cases"]]


@pytest.mark.parametrize("mode", ["whole", "slide"])
def test_camvid_predict_then_score_gives_evaluates_numbers(real_data, tmp_path, mode):
    cfg = _config(
        {"name": "transunet_vit_t16", "num_classes": 11,
         "kwargs": {"head_channels": 64, "decoder_channels": [64, 32, 16, 8]}},
        {"kind": "camvid", "root": str(real_data / "camvid"), "void_labels": [11], "crop_size": [128, 160],
         "augment": "street", "size_divisor": 16, "eval_mode": mode},
        iters=2, batch_size=2, eval_batch_size=3,
    )
    metrics = train(cfg, tmp_path / "run", device="cpu")
    images = sorted((real_data / "camvid" / "val").glob("*.png"))
    Predictor.from_checkpoint(tmp_path / "run" / LAST, PredictOptions(batch_size=4)).predict(
        [real_data / "camvid" / "val"], tmp_path / "pred")
    for image in images:
        assert np.asarray(Image.open(tmp_path / "pred" / image.name)).shape == (360, 480)
        picture = np.asarray(Image.open(tmp_path / "pred" / "pictures" / image.name))
        assert picture.shape[1:] == (480, 3) and picture.shape[0] > 360  # the overlay, with a legend below
        assert (picture[360:] == 255).mean() > 0.5  # the legend is a white strip
    # the folder predict wrote scores as it lies (pictures/ is passed over): evaluate's numbers exactly
    out = tmp_path / "scores.json"
    assert main(["score", "semantic", str(real_data / "camvid" / "valannot"), str(tmp_path / "pred"),
                 "--num-classes", "11", "--ignore-index", "11", "--out", str(out)]) == 0  # 11: CamVid's void
    scored = json.loads(out.read_text())
    for key in ("aAcc", "mIoU", "mAcc", "mDice"):
        assert scored[key] == metrics[key], key
    assert [row["IoU"] for row in scored["per_class"]] == [row["IoU"] for row in metrics["per_class"]]


class OneHotOfChannel(torch.nn.Module):
    """Logits whose arg-max is channel 0 of the input, rounded: a model that 'reads' the answer."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x):
        return torch.nn.functional.one_hot(x[:, 0].round().long(), self.num_classes).permute(0, 3, 1, 2).float()


def test_validation_segments_whole_cases_and_scores_them(tmp_path):
    """Collate + eval_step of whole cases, with a model that reads the labels from the image, give back the labels."""
    write_phantoms(tmp_path / "val", 2, seed=5, shape=(40, 40, 6))
    cfg = _config({"name": "transunet_r50_vitb16", "num_classes": 4, "kwargs": TINY_HYBRID},
                  {"kind": "nifti", "train_root": str(tmp_path / "val"), "val_root": str(tmp_path / "val"),
                   "normalisation": "ct", "crop_size": [40, 40], "eval_chunk": 4})
    task = build_task(cfg)
    _, val = task.build_datasets()
    samples = [{**val[i], "image": val[i]["label"][None].float()} for i in range(2)]  # the answer as the image
    images, targets = task.collate(samples)
    assert [tuple(v.shape) for v in images] == [(1, 40, 40, 6)] * 2 and len(targets["cases"]) == 2
    volumes = task.eval_step(OneHotOfChannel(4), images, targets)
    for volume, case in zip(volumes, targets["cases"]):
        assert torch.equal(volume, case["label"])
    evaluator = task.build_evaluator()
    evaluator.process(volumes, targets)
    result = evaluator.compute()
    assert result["mean_dice"] == 1.0 and result["mean_hd95"] == 0.0


def test_legacy_segmentation_configs_and_checkpoints_pick_their_task():
    """``task: segmentation`` with the old single data section (as checkpoints stored it, every key)."""
    from densevit.segmentation.config import ImageDataConfig, VolumeDataConfig

    old_keys = {**dataclasses.asdict(ImageDataConfig()), **dataclasses.asdict(VolumeDataConfig())}
    volume = build_config({"task": "segmentation", "model": {"name": "transunet_r50", "num_classes": 4},
                           "data": {**old_keys, "kind": "phantoms", "root": "/tmp/x"}})
    assert volume.task == "volume_segmentation" and volume.data.root == "/tmp/x"
    street = build_config({"task": "segmentation", "model": {"name": "transunet_r50", "num_classes": 11},
                           "data": {**old_keys, "kind": "street", "eval_mode": "slide"}})
    assert street.task == "image_segmentation" and street.data.kind == "camvid" and street.data.eval_mode == "slide"
    with pytest.raises(ConfigError, match="unknown key 'data.typo'"):
        build_config({"task": "segmentation", "data": {"kind": "camvid", "typo": 1}})


def test_every_segmentation_config_loads():
    from densevit.config import load_config

    configs = sorted((Path(__file__).resolve().parents[2] / "configs" / "segmentation").glob("*.yaml"))
    assert len(configs) >= 6
    for path in configs:
        cfg = load_config(path)
        assert cfg.task in ("image_segmentation", "volume_segmentation") and cfg.model.num_classes >= 2
    paper = load_config(configs[0].parent / "transunet_r50_vitb16_synapse.yaml")
    assert (paper.train.iters, paper.train.batch_size, paper.optim.name, paper.optim.lr) == (14000, 24, "sgd", 0.01)
    assert paper.data.crop_size == (224, 224) and paper.schedule.name == "poly" and paper.model.num_classes == 9
