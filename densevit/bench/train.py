"""Training throughput: steps/s and peak memory of the engine's step, fp32 vs bf16 vs bf16 + compile.

Each variant builds the config's :class:`~densevit.engine.trainer.Trainer` and times its
``train_step`` (forward, loss, backward, clipping, optimiser and schedule: everything but
data loading) on one batch from the config's own training loader, after warm-up steps
(which include ``torch.compile``'s compilation). The baseline is fp32 without compile,
measured in the same run. On a GPU the default variants are ``fp32,bf16,bf16+compile``;
on a CPU only ``fp32`` (CPU autocast is not what anyone trains with).

Peak memory is ``torch.cuda.max_memory_allocated`` per variant on a GPU; on a CPU it is the
process's peak resident set size so far (it only grows from one variant to the next).
"""
from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from densevit.demos import demo_config_path

BASELINE = "fp32"


def default_config() -> Path:
    """The segmentation demo's config (a reduced TransUNet on generated CT phantoms)."""
    return demo_config_path("segment")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None,
                        help="experiment YAML (default: the segmentation demo, on phantoms generated in a temporary folder)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value (repeatable), e.g. --set train.batch_size=16")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--variants", default="auto",
                        help="comma-separated precision[+compile] list, e.g. fp32,bf16,bf16+compile "
                        "(default: those three on a GPU, fp32 on a CPU)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens here)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from densevit.engine.runtime import resolve_device

    device = resolve_device(args.device)
    variants = _variants(args.variants, device)
    with tempfile.TemporaryDirectory(prefix="densevit-bench-train-") as tmp:
        overrides = list(args.overrides)
        config = args.config
        if config is None:
            config = default_config()
            overrides.insert(0, f"data.root={Path(tmp) / 'phantoms'}")
        results = {}
        for name in variants:
            results[name] = _measure(config, overrides, name, device, args.steps, args.warmup, Path(tmp) / name)
            print(f"train {name}: {results[name]}", flush=True)
    base = results[BASELINE]["steps_per_s"]
    for figures in results.values():
        figures["speedup_vs_fp32"] = round(figures["steps_per_s"] / base, 3)
    return {
        "config": str(config),
        "overrides": list(args.overrides),
        "device": str(device),
        "baseline": BASELINE,
        "variants": results,
    }


def _variants(spec: str, device: torch.device) -> list[str]:
    if spec == "auto":
        names = ["fp32", "bf16", "bf16+compile"] if device.type == "cuda" else ["fp32"]
    else:
        names = [s.strip() for s in spec.split(",") if s.strip()]
    if BASELINE not in names:
        names.insert(0, BASELINE)  # every figure is reported against fp32 from the same run
    return names


def _measure(
    config: Path, overrides: list[str], variant: str, device: torch.device, steps: int, warmup: int, out_dir: Path
) -> dict[str, Any]:
    from densevit.config import load_config
    from densevit.engine.trainer import Trainer

    precision, _, compile_flag = variant.partition("+")
    cfg = load_config(
        config,
        [
            *overrides,
            f"train.precision={precision}",
            f"train.compile={'true' if compile_flag == 'compile' else 'false'}",
            "train.progress=false",
            "train.tensorboard=false",
            "train.plot_curves=false",
        ],
    )
    trainer = Trainer(cfg, out_dir, device=str(device))
    try:
        batch = next(iter(trainer.train_loader))
        chunk = [batch] * cfg.train.accumulate_steps
        trainer.train_model.train()
        for _ in range(warmup):
            trainer.train_step(chunk)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_step(chunk)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        if device.type == "cuda":
            peak = {"peak_gpu_memory_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1)}
        else:
            peak = {"peak_process_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
        samples = cfg.train.batch_size * cfg.train.accumulate_steps
        return {
            "steps_per_s": round(steps / seconds, 3),
            "samples_per_s": round(steps * samples / seconds, 2),
            "batch_per_step": samples,
            "precision": trainer.precision,
            "compile": cfg.train.compile,
            **peak,
        }
    finally:
        trainer.close()
