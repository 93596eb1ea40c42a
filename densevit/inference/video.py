"""Prediction on videos: frames decoded one at a time with PyAV, predicted in batches, and written
as an annotated video beside per-frame results.

For a video ``NAME.mp4`` (or ``.avi``, ``.mov``, ``.mkv``, ``.webm``) the output folder gets

* ``NAME.mp4``: the frames with the predictions drawn (H.264 when PyAV has libx264, else MPEG-4
  part 2), at the input's size and average frame rate (divided by ``every``); left out with
  ``pictures=False`` (``--no-pictures``);
* ``NAME.frames.json``: the video's ``fps``, ``width``, ``height`` and a COCO-style ``images`` list,
  one entry per predicted frame: ``id`` = frame index + 1 (frames counted from 0 in presentation
  order, before ``every`` is applied), ``frame_index``, ``timestamp`` in seconds and
  ``file_name`` = ``frame_000123.png``;
* what the task's :data:`VIDEO_RUNNERS` entry writes: detection ``NAME.json`` (COCO results
  whose ``image_id`` is that frame id), image segmentation ``NAME/frame_000123.png`` label maps.

PyAV is the optional extra ``densevit[video]``, imported only when a video is read.
"""
from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol, Sequence

import numpy as np
from tqdm import tqdm

from densevit.data import IMAGE_SUFFIXES
from densevit.errors import UserInputError
from densevit.io import atomic_path, write_json_atomic
from densevit.registry import Registry

if TYPE_CHECKING:
    from densevit.inference.predictor import Predictor

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
# When a container says nothing about its rate.
FALLBACK_RATE = Fraction(25)


@dataclass(frozen=True)
class Frame:
    """One decoded frame: ``index`` in the video (from 0), ``timestamp`` in seconds, ``rgb`` [H,W,3] uint8."""

    index: int
    timestamp: float
    rgb: np.ndarray

    @property
    def image_id(self) -> int:
        """The frame's id in the result files: its index + 1 (COCO ids start at 1)."""
        return self.index + 1

    @property
    def file_name(self) -> str:
        return f"frame_{self.index:06d}.png"

    def coco_image(self) -> dict[str, Any]:
        """The frame's entry in ``NAME.frames.json`` (a COCO ``images`` entry, plus index and time)."""
        return {"id": self.image_id, "frame_index": self.index, "timestamp": self.timestamp,
                "file_name": self.file_name, "width": self.rgb.shape[1], "height": self.rgb.shape[0]}


class FramePredictor(Protocol):
    """A task's way of predicting one video, built as ``VIDEO_RUNNERS.get(task)(predictor, frames_dir)``.

    Files for single frames go in ``frames_dir``, which becomes ``OUT/NAME/`` once the whole video
    is done (and is discarded if it fails).
    """

    batch_size: int

    def predict(self, frames: list[Frame]) -> list[np.ndarray]:
        """Predict ``frames`` and return them drawn ([H,W,3] uint8 each; none when pictures are off)."""

    def finish(self, out_dir: Path, name: str) -> dict[str, Any]:
        """Write the video's results into ``out_dir`` and return the summary (counts, files)."""


VIDEO_RUNNERS = Registry("video predictor")


def is_video(path: Path) -> bool:
    return path.name.lower().endswith(VIDEO_SUFFIXES)


def split_videos(inputs: Sequence[Path], task_name: str) -> tuple[list[Path], list[Path]]:
    """``(inputs for the task's own runner, video files)``.

    Video files given by name, and those in the folders given, are taken out; a folder stays among
    the other inputs unless all it holds are videos. A video given to a task that cannot predict
    videos is a ``UserInputError`` (its folders are left to its runner, as before videos existed).
    """
    others: list[Path] = []
    videos: list[Path] = []
    for path in inputs:
        if path.is_file() and is_video(path):
            if task_name not in VIDEO_RUNNERS:
                raise UserInputError(f"{path}: videos are predicted by {' and '.join(VIDEO_RUNNERS.names())} "
                                     f"checkpoints; this one is {task_name}")
            videos.append(path)
        elif path.is_dir() and task_name in VIDEO_RUNNERS:
            files = sorted(p for p in path.iterdir() if p.is_file())
            found = [p for p in files if is_video(p)]
            videos.extend(found)
            if not found or any(p.name.lower().endswith(IMAGE_SUFFIXES) for p in files):
                others.append(path)
        else:
            others.append(path)
    seen: dict[str, Path] = {}
    for video in videos:
        if video.stem in seen:
            raise UserInputError(f"{video}: its results would overwrite those of {seen[video.stem]} "
                                 "(videos need different names)")
        seen[video.stem] = video
    return others, videos


def import_av(path: Path) -> Any:
    """PyAV, or one line saying how to install it."""
    try:
        import av
    except ImportError:
        raise UserInputError(f'{path}: reading videos needs PyAV: pip install "densevit[video]"') from None
    return av


@dataclass(frozen=True)
class VideoInfo:
    """What the container says: frame size, average frame rate, frame count (None when unknown)."""

    width: int
    height: int
    rate: Fraction
    frames: int | None


@contextlib.contextmanager
def open_video(path: Path) -> Iterator[tuple[Any, Any, VideoInfo]]:
    """``(container, its first video stream, VideoInfo)``, closed on exit; unreadable files and files
    without a video stream are a ``UserInputError`` naming the file."""
    av = import_av(path)
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as err:
        raise UserInputError(f"{path}: cannot read the video ({getattr(err, 'strerror', None) or err})") from None
    try:
        if not container.streams.video:
            kinds = sorted({stream.type for stream in container.streams}) or ["none"]
            raise UserInputError(f"{path}: no video stream in the file (streams: {', '.join(kinds)})")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # decode on several threads, frames still in order
        rate = stream.average_rate or stream.guessed_rate or FALLBACK_RATE
        context = stream.codec_context
        yield container, stream, VideoInfo(context.width, context.height, Fraction(rate), stream.frames or None)
    finally:
        container.close()


def check_videos(videos: Sequence[Path]) -> None:
    """Open every video once, so that a broken one stops the run before anything is predicted."""
    for video in videos:
        with open_video(video):
            pass


def read_frames(path: Path, container: Any, stream: Any, info: VideoInfo, every: int = 1,
                max_frames: int | None = None) -> Iterator[Frame]:
    """Frames 0, ``every``, 2 ``every``, ... (of the first ``max_frames``), decoded one at a time."""
    av = import_av(path)
    index = 0
    try:
        for decoded in container.decode(stream):
            if max_frames is not None and index >= max_frames:
                return
            if index % every == 0:
                time = decoded.time
                yield Frame(index, float(time) if time is not None else float(index / info.rate),
                            decoded.to_ndarray(format="rgb24"))
            index += 1
    except av.FFmpegError as err:
        raise UserInputError(f"{path}: cannot decode frame {index} ({getattr(err, 'strerror', None) or err})") from None


def _encoder(av: Any) -> str:
    """libx264 (H.264) when this PyAV build has it, else mpeg4, which every build has."""
    try:
        av.codec.Codec("libx264", "w")
    except (av.FFmpegError, ValueError):
        return "mpeg4"
    return "libx264"


@contextlib.contextmanager
def video_writer(path: Path, width: int, height: int, rate: Fraction) -> Iterator[Callable[[np.ndarray], None]]:
    """A function that appends a picture [h,w,3] uint8 to the MP4 video ``path`` (written atomically),
    scaled to ``width`` x ``height`` when its size differs."""
    av = import_av(path)
    codec = _encoder(av)
    with atomic_path(path) as tmp, av.open(str(tmp), "w", format="mp4") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height = width, height
        # libx264's 4:2:0 needs even sides; odd ones keep full chroma instead of losing a pixel
        stream.pix_fmt = "yuv420p" if codec == "mpeg4" or (width % 2 == 0 and height % 2 == 0) else "yuv444p"

        def write(picture: np.ndarray) -> None:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24")
            if (frame.width, frame.height) != (width, height):  # pictures drawn enlarged, for legible text
                frame = frame.reformat(width=width, height=height, interpolation="AREA")
            out.mux(stream.encode(frame))

        yield write
        out.mux(stream.encode())  # the frames the encoder still holds


@contextlib.contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """A temporary folder beside ``target`` that replaces it on success (if anything was written in
    it) and is removed on failure, so that a folder of frame results is whole or absent."""
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        yield staging
        if any(staging.iterdir()):
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _batches(frames: Iterator[Frame], size: int) -> Iterator[list[Frame]]:
    batch: list[Frame] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def predict_video(predictor: Predictor, task_name: str, path: Path, out_dir: Path) -> dict[str, Any]:
    """Predict one video with the :data:`VIDEO_RUNNERS` entry of ``task_name``; see the module docstring."""
    options = predictor.options
    name = path.stem
    annotated = out_dir / f"{name}.mp4"
    if annotated.exists() and annotated.resolve() == path.resolve():
        raise UserInputError(f"{path}: the annotated video would overwrite it: choose another --out folder")
    records: list[dict[str, Any]] = []
    with open_video(path) as (container, stream, info), staged_folder(out_dir / name) as frames_dir, \
            contextlib.ExitStack() as stack:
        runner: FramePredictor = VIDEO_RUNNERS.get(task_name)(predictor, frames_dir)
        count = min(info.frames or math.inf, options.max_frames or math.inf)
        bar = stack.enter_context(tqdm(total=math.ceil(count / options.every) if count < math.inf else None,
                                       desc=path.name, unit="frame", dynamic_ncols=True))
        write = (stack.enter_context(video_writer(annotated, info.width, info.height, info.rate / options.every))
                 if options.pictures else None)
        for batch in _batches(read_frames(path, container, stream, info, options.every, options.max_frames),
                              runner.batch_size):
            pictures = runner.predict(batch)
            if write:
                for picture in pictures:
                    write(picture)
            records.extend(frame.coco_image() for frame in batch)
            bar.update(len(batch))
        if not records:
            raise UserInputError(f"{path}: the video has no frames")
        summary = runner.finish(out_dir, name)
    write_json_atomic({"video": str(path), "fps": float(info.rate / options.every), "width": info.width,
                       "height": info.height, "images": records}, out_dir / f"{name}.frames.json")
    if write:
        summary["annotated_videos"] = [str(annotated)]
    return {"videos": 1, "frames": len(records), **summary}
