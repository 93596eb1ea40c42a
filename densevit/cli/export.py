"""``densevit export CHECKPOINT --format onnx --out FILE``: a trained model as a checked ONNX graph."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a checkpoint to ONNX, checked in onnxruntime before it is written",
        description="Export the model of CHECKPOINT to ONNX (dynamic batch and image size where the "
        "model allows it). The graph is run in onnxruntime on a real input (padding included) and the "
        "file is written only if its outputs equal PyTorch's within --tolerance and hold no NaN. "
        "Needs the export extra: pip install 'densevit[export]'.",
    )
    parser.add_argument("checkpoint", type=Path, help="a .pth written by densevit train (or converted)")
    parser.add_argument("--format", choices=("onnx",), default="onnx", help="output format (onnx)")
    parser.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    parser.add_argument("--sample", type=Path,
                        help="the input to check on: an image, or a NIfTI volume (default: the config's first "
                        "validation input when it is at hand, else a generated picture)")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest difference allowed, relative to 1 + the output's magnitude (default 1e-4)")
    parser.add_argument("--opset", type=int, help="ONNX opset version (default: the exporter's)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from densevit.errors import UserInputError

    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise UserInputError(f"export needs {err.name}: pip install 'densevit[export]'") from None
    from densevit.inference.export import ExportMismatch, export_onnx
    from densevit.io import writable_folder

    writable_folder(args.out.parent, "--out file's folder")

    try:
        report = export_onnx(args.checkpoint, args.out, args.sample, args.tolerance, args.opset)
    except ExportMismatch as err:
        raise UserInputError(f"{args.out}: not written: the exported graph does not match PyTorch ({err})") from None
    print(json.dumps(report))
    return 0
