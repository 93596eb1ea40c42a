"""``densevit evaluate CONFIG --checkpoint PATH [--set k=v ...] [--out FILE] [--device D]
[--save-pictures N [--pictures-dir DIR] [--score-threshold S]]``."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score a checkpoint on the config's validation set",
        description="Load the weights of CHECKPOINT into the model of CONFIG, run the task's "
        "evaluator over the validation set and print the metrics as JSON.",
    )
    parser.add_argument("config", type=Path, help="experiment YAML file")
    parser.add_argument("--checkpoint", type=Path, required=True, help="a .pth written by densevit train")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value (repeatable)")
    parser.add_argument("--out", type=Path, help="also write the metrics to this JSON file")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: train.device)")
    parser.add_argument("--strict", action="store_true",
                        help="suspicious data (a class never in the ground truth, labels mostly ignored) is an error")
    parser.add_argument("--save-pictures", type=int, default=0, metavar="N",
                        help="also draw 'ground truth | prediction' for the first N validation samples "
                        "(the metrics are the same with or without)")
    parser.add_argument("--pictures-dir", type=Path, metavar="DIR",
                        help="folder for those pictures (default: pictures/ beside the --out file)")
    parser.add_argument("--score-threshold", type=float, default=0.5, metavar="S",
                        help="detection pictures: draw predicted boxes scoring at least this (default 0.5)")
    parser.set_defaults(func=run)


def pictures_folder(args: argparse.Namespace) -> Path | None:
    """Where ``--save-pictures`` writes (None: no pictures); a one-line error when it cannot say."""
    from densevit.errors import UserInputError

    if args.save_pictures < 0:
        raise UserInputError(f"--save-pictures: expected a number of pictures >= 0, got {args.save_pictures}")
    if not args.save_pictures:
        return None
    if args.pictures_dir:
        return args.pictures_dir
    if args.out:
        return args.out.parent / "pictures"
    raise UserInputError("--save-pictures: name a folder for the pictures (--pictures-dir DIR, or --out FILE: "
                         "they then go to pictures/ beside it)")


def run(args: argparse.Namespace) -> int:
    from densevit.config import load_config
    from densevit.distributed import launcher_rank
    from densevit.engine.evaluate import evaluate
    from densevit.errors import UserInputError, note
    from densevit.io import dumps_json, writable_folder, write_text_atomic

    cfg = load_config(args.config, [*args.overrides, *(["strict=true"] if args.strict else [])])
    if args.out and launcher_rank() == 0:
        writable_folder(args.out.parent, "--out file's folder")
    folder = pictures_folder(args)
    after = None
    if folder is not None:
        from densevit.inference.comparisons import COMPARISONS, save_comparisons

        if cfg.task not in COMPARISONS:  # said before the evaluation, not after it
            raise UserInputError(f"--save-pictures: task {cfg.task!r} has no comparison pictures "
                                 f"(known: {', '.join(COMPARISONS.names())})")
        if launcher_rank() == 0:
            writable_folder(folder, "--pictures-dir folder")

        def after(task, model, dataset, device) -> None:  # type: ignore[no-untyped-def]
            written = save_comparisons(task, model, dataset, args.save_pictures, folder, device,
                                       args.score_threshold)
            note(f"wrote {len(written)} picture(s) to {folder}")

    metrics = evaluate(cfg, args.checkpoint, device=args.device, after=after)
    if launcher_rank() == 0:
        text = dumps_json(metrics, indent=2)
        if args.out:
            write_text_atomic(args.out, text + "\n")
        print(text)
    return 0
