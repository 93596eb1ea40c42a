"""``densevit data convert --from yolo|voc --to coco SRC --out FILE.json [--split val]``."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "data",
        help="work with datasets: convert YOLO or Pascal VOC detection labels to COCO JSON",
        description="Work with datasets on disk.",
    )
    commands = parser.add_subparsers(dest="data_command", metavar="ACTION")
    convert = commands.add_parser(
        "convert",
        help="write one split of a YOLO or Pascal VOC dataset as a COCO instances JSON",
        description="Read one split of a detection dataset in YOLO (ultralytics data.yaml) or Pascal VOC "
        "(VOCdevkit/VOC2007) layout, with the checks training makes, and write it as a COCO instances "
        "JSON (written atomically). Its images' file_name are relative to the folder printed.",
    )
    convert.add_argument("--from", dest="source_format", choices=("yolo", "voc"), required=True,
                         help="the layout of SRC")
    convert.add_argument("--to", dest="target_format", choices=("coco",), default="coco", help="output layout")
    convert.add_argument("src", type=Path, help="the data.yaml (yolo) or the VOC folder, e.g. VOCdevkit/VOC2007 (voc)")
    convert.add_argument("--out", type=Path, required=True, help="the COCO JSON file to write")
    convert.add_argument("--split", default="val",
                         help="data.yaml key (yolo) or ImageSets/Main/<split>.txt (voc); default: val")
    convert.add_argument("--names", type=Path,
                         help="voc: a file of class names, one per line (default: the 20 Pascal VOC classes)")
    convert.add_argument("--bad-annotations", choices=("raise", "drop"), default="raise",
                         help="a bad label line or object: stop (default) or leave it out with one warning")
    convert.set_defaults(func=run_convert)
    parser.set_defaults(func=lambda args: parser.print_help() or 0)


def run_convert(args: argparse.Namespace) -> int:
    from densevit.data.coco_json import read_instances, without_origins
    from densevit.errors import UserInputError
    from densevit.io import writable_folder, write_json_atomic

    names: list[str] = []
    if args.names is not None:
        if args.source_format != "voc":
            raise UserInputError("--names: only for --from voc (data.yaml names the YOLO classes)")
        try:
            names = [line.strip() for line in args.names.read_text().splitlines() if line.strip()]
        except OSError as err:
            raise UserInputError(f"{args.names}: cannot read the class names ({err.strerror or err})") from None
        if not names:
            raise UserInputError(f"{args.names}: no class name in the file")
    writable_folder(args.out.parent, "--out file's folder")
    instances = read_instances(args.source_format, args.src, args.split, class_names=names,
                               bad_annotations=args.bad_annotations)
    data = without_origins(instances.data)
    write_json_atomic(data, args.out, indent=None)
    print(f"{args.out}: {len(data['images'])} images, {len(data['annotations'])} annotations, "
          f"{len(data['categories'])} categories; file_name relative to {instances.image_dir}")
    return 0
