"""The segmentation task end to end on real data: load, train a few steps, evaluate, predict."""
from __future__ import annotations

from argparse import Namespace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from densevit.config import build_config
from densevit.data.phantoms import write_phantoms
from densevit.engine.build import build_from_checkpoint, build_task
from densevit.engine.checkpoint import LAST
from densevit.engine.trainer import train
from densevit.evaluation.medical import MedicalEvaluator
from densevit.evaluation.semantic import SemanticEvaluator

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
    assert 0.0 <= metrics["mean_dice"] <= 1.0 or np.isnan(metrics["mean_dice"])

    task, model = build_from_checkpoint(tmp_path / "run" / LAST)
    case = brats / "val" / "brats_2013_pat0004_1"
    task.predict(model, [case], tmp_path / "pred", Namespace(batch_size=32, overlap=None))
    written = nib.load(str(tmp_path / "pred" / "brats_2013_pat0004_1_seg.nii.gz"))
    source = nib.load(str(case / "Flair_subtrMeanDivStd.nii.gz"))
    assert written.shape == source.shape and np.allclose(written.affine, source.affine)
    assert (tmp_path / "pred" / "brats_2013_pat0004_1_overlay.png").is_file()

    # the same numbers as the evaluator run directly on the written prediction
    evaluator = MedicalEvaluator(5)
    label = np.asarray(nib.load(str(case / "OTMultiClass.nii.gz")).dataobj).astype(np.int64)
    evaluator.process(np.asarray(written.dataobj).astype(np.int64), label, (1.0, 1.0, 1.0), "case")
    direct = evaluator.compute()["mean"]["dice"]
    assert direct == pytest.approx(metrics["mean_dice"], nan_ok=True)


def test_camvid_train_evaluate_predict_with_sliding_windows(real_data, tmp_path):
    cfg = _config(
        {"name": "transunet_vit_t16", "num_classes": 11,
         "kwargs": {"head_channels": 64, "decoder_channels": [64, 32, 16, 8]}},
        {"kind": "camvid", "root": str(real_data / "camvid"), "void_labels": [11], "crop_size": [128, 160],
         "augment": "street", "size_divisor": 16},
        iters=2, batch_size=2,
    )
    metrics = train(cfg, tmp_path / "run", device="cpu")
    assert 0.0 <= metrics["mIoU"] <= 1.0 and "IoU/car" in metrics

    task, model = build_from_checkpoint(tmp_path / "run" / LAST)
    image = real_data / "camvid" / "val" / sorted(p.name for p in (real_data / "camvid" / "val").iterdir())[0]
    task.predict(model, [image], tmp_path / "pred", Namespace(batch_size=4, overlap=0.5))
    labels = np.asarray(Image.open(tmp_path / "pred" / f"{image.stem}.png"))
    assert labels.shape == (360, 480) and labels.max() < 11
    overlay = np.asarray(Image.open(tmp_path / "pred" / f"{image.stem}_overlay.png"))
    assert overlay.shape == (360, 480, 3)
    # the written labels score like any label map: SemanticEvaluator on them, void ignored
    truth = np.asarray(Image.open(real_data / "camvid" / "valannot" / image.name)).astype(np.int64)
    truth[truth == 11] = 255
    scorer = SemanticEvaluator(11)
    scorer.process(torch.from_numpy(labels.astype(np.int64)), torch.from_numpy(truth))
    assert 0.0 <= scorer.compute()["aAcc"] <= 1.0


def test_validation_batches_reassemble_whole_cases(tmp_path):
    """Collate + postprocess of whole cases, with logits that copy the resized masks, give back the labels."""
    write_phantoms(tmp_path / "val", 2, seed=5, shape=(40, 40, 6))
    cfg = _config({"name": "transunet_r50_vitb16", "num_classes": 4, "kwargs": TINY_HYBRID},
                  {"kind": "nifti", "train_root": str(tmp_path / "val"), "val_root": str(tmp_path / "val"),
                   "normalisation": "ct", "crop_size": [40, 40]})
    task = build_task(cfg)
    _, val = task.build_datasets()
    images, targets = task.collate([val[0], val[1]])
    assert images.shape == (12, 1, 40, 40) and targets["masks"].shape == (12, 40, 40)
    logits = torch.nn.functional.one_hot(targets["masks"], 4).permute(0, 3, 1, 2).float()
    volumes = task.build_postprocessor()(logits, targets)
    for volume, case in zip(volumes, targets["cases"]):
        assert torch.equal(volume, case["label"])
    evaluator = task.build_evaluator()
    evaluator.process(volumes, targets)
    result = evaluator.compute()
    assert result["mean_dice"] == 1.0 and result["mean_hd95"] == 0.0


def test_every_segmentation_config_loads():
    from densevit.config import load_config

    configs = sorted((Path(__file__).resolve().parents[2] / "configs" / "segmentation").glob("*.yaml"))
    assert len(configs) >= 6
    for path in configs:
        cfg = load_config(path)
        assert cfg.task == "segmentation" and cfg.model.num_classes >= 2
    paper = load_config(configs[0].parent / "transunet_r50_vitb16_synapse.yaml")
    assert (paper.train.iters, paper.train.batch_size, paper.optim.name, paper.optim.lr) == (14000, 24, "sgd", 0.01)
    assert paper.data.crop_size == (224, 224) and paper.schedule.name == "poly" and paper.model.num_classes == 9
