"""``densevit attention CHECKPOINT_OR_MODEL IMAGE --out DIR``: attention maps as pictures and arrays."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "attention",
        help="draw a model's attention on an image (ViT/TNT/hybrid, Swin, CSWin, DETR, RT-DETR)",
        description="Run the model once on IMAGE and write its attention to --out as PNG overlays and "
        ".npy arrays, listed in attention.json. ViT, R50+ViT, TransUNet and TNT encoders: the last "
        "layer's class-token attention per head (without a class token: the mean attention each patch "
        "receives) and the attention rollout. Swin: one pixel's attention within its window in the last "
        "two blocks of a stage (regular and shifted windows). CSWin: one pixel's attention in the last "
        "block of a stage within its vertical and its horizontal stripe (the whole map in the last "
        "stage), with the cross of both. DETR: the last decoder layer's "
        "cross-attention of the best queries, with their boxes. RT-DETR: their deformable sampling "
        "points, sized by weight. The model's outputs are not changed by taking the maps.",
    )
    parser.add_argument("model", metavar="CHECKPOINT_OR_MODEL",
                        help="a .pth written by densevit train, or a registered model or backbone name")
    parser.add_argument("image", type=Path, metavar="IMAGE", help="the image to look at")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--weights", type=Path,
                        help="with a model or backbone name: a weight file, or timm:<model> / hf-hub:<org>/<repo> "
                        "(default: random weights)")
    parser.add_argument("--head", type=int,
                        help="show this attention head (default: the mean over heads; RT-DETR: every head; CSWin: "
                        "this head of each stripe's half)")
    parser.add_argument("--pixel", type=int, nargs=2, metavar=("X", "Y"),
                        help="Swin / CSWin: the pixel whose attention is shown, in IMAGE's pixels (default: the centre)")
    parser.add_argument("--stage", type=int, default=-1, help="Swin / CSWin: the stage (default -1, the last)")
    parser.add_argument("--boxes", type=int, default=5,
                        help="DETR / RT-DETR: how many of the best-scoring queries to draw (default 5)")
    parser.add_argument("--size", type=int,
                        help="the model input's longer side in pixels (default: a detection checkpoint's "
                        "data.val_size, or data.input_size for RT-DETR, else 224)")
    parser.add_argument("--num-classes", type=int, default=80,
                        help="a detector built by name: its number of classes (default 80)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from densevit.errors import UserInputError
    from densevit.inference.attention import AttentionOptions, attention_maps
    from densevit.io import writable_folder

    for flag, value, least in (("--boxes", args.boxes, 1), ("--size", args.size, 16), ("--num-classes", args.num_classes, 1)):
        if value is not None and value < least:
            raise UserInputError(f"{flag} {value}: must be at least {least}")
    writable_folder(args.out, "--out folder")
    options = AttentionOptions(head=args.head, pixel=tuple(args.pixel) if args.pixel else None, stage=args.stage,
                               boxes=args.boxes, size=args.size, num_classes=args.num_classes)
    summary = attention_maps(args.model, args.image, args.out, options, args.weights)
    print(f"wrote {len(summary['files'])} files to {args.out} ({summary['kind']} attention): "
          f"{json.dumps(sorted(summary['files']))}")
    return 0
