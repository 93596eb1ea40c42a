"""``densevit predict --checkpoint C INPUT... --out DIR``: run a trained model over files."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="run a trained checkpoint (or an exported ONNX graph) over images, videos, folders or volumes",
        description="Rebuild the model that CHECKPOINT was trained as (its config is stored in it) "
        "and write its predictions for each INPUT to --out; the task decides the formats. "
        "Unless told otherwise, inference runs as the config's validation did (mode, overlap, chunk). "
        "Videos (.mp4 .avi .mov .mkv .webm; detection and image segmentation, needs densevit[video]) give "
        "NAME.mp4 with the predictions drawn, NAME.frames.json (frame id = frame index + 1, timestamps) and "
        "NAME.json (detection, COCO results) or NAME/frame_000123.png (segmentation labels).",
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="files or folders (images and videos may mix)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="a .pth written by densevit train")
    source.add_argument("--onnx", type=Path, help="a graph written by densevit export (run by onnxruntime)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--precision", default="fp32", help="fp32 | bf16 | fp16 | auto (default fp32)")
    parser.add_argument("--score-threshold", type=float, default=0.5,
                        help="detection: draw boxes scoring at least this (default 0.5); results.json "
                        "keeps every detection, as COCO scoring needs")
    parser.add_argument("--mode", choices=("whole", "slide"),
                        help="segmentation of pictures: whole images or sliding windows (default: data.eval_mode)")
    parser.add_argument("--overlap", type=float,
                        help="sliding-window overlap between tiles, in [0, 1) (default: data.eval_overlap)")
    parser.add_argument("--batch-size", type=int,
                        help="images, frames, tiles or slices per forward pass (default: the task's own)")
    parser.add_argument("--every", type=int, default=1, metavar="N",
                        help="videos: predict every Nth frame (0, N, 2N, ...); the annotated video runs at 1/N "
                        "of the frame rate (default 1)")
    parser.add_argument("--max-frames", type=int, metavar="N", help="videos: only the first N frames of each")
    parser.add_argument("--no-pictures", dest="pictures", action="store_false",
                        help="write only the result files, no overlays, drawn boxes or annotated videos")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from densevit.inference import PredictOptions, Predictor
    from densevit.io import writable_folder

    writable_folder(args.out, "--out folder")  # before the model is even read
    options = PredictOptions(score_threshold=args.score_threshold, batch_size=args.batch_size, mode=args.mode,
                             overlap=args.overlap, device=args.device, precision=args.precision,
                             pictures=args.pictures, every=args.every, max_frames=args.max_frames)
    if args.onnx is not None:
        predictor = Predictor.from_onnx(args.onnx, options)
    else:
        predictor = Predictor.from_checkpoint(args.checkpoint, options)
    summary = predictor.predict(args.inputs, args.out)
    counts = {k: v for k, v in summary.items() if isinstance(v, int)}
    print(f"wrote predictions to {args.out}: {json.dumps(counts)}")
    return 0
