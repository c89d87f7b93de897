"""Video files (MP4, AVI, MOV, MKV, WebM) with PyAV: read to frames, write overlay videos.

A video is an ``Image`` with ``spatial_dims=3`` whose axis 0 is time: ``(T, H, W, 3)`` uint8
RGB, ``frame_names[i]`` the zero-padded number of frame ``i`` ("0000", "0001", ...). Pixels are
1 unit: a video says nothing about millimetres, so the geometry is the identity.

PyAV (``pip install av``) is imported only when a video is read or written.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from automedseg.errors import InputError
from automedseg.io._common import atomic_open
from automedseg.io.writers import write_animated_gif
from automedseg.types import Image

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm"})

# MP4 encoders to try, best first: H.264 (plays everywhere), then MPEG-4 part 2.
_MP4_CODECS = ("libx264", "mpeg4")


def is_video_name(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def frame_name(index: int, count: int) -> str:
    """Frame ``index`` of ``count`` as a zero-padded number: at least 4 digits, more if needed."""
    return f"{index:0{max(4, len(str(max(count - 1, 0))))}d}"


def _error_detail(error: Exception) -> str:
    """One line about a library error (PyAV's ``strerror`` leaves out the errno and path)."""
    text = getattr(error, "strerror", None) or str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _decode_rgb(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path), mode="r") as container:
        if not container.streams.video:
            raise InputError("cannot decode the video: the file holds no video stream", path)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames: list[np.ndarray] = []
        width = height = None
        for frame in container.decode(stream):
            if width is None:
                width, height = frame.width, frame.height
            # A stream that changes size mid-way is scaled to the size of its first frame.
            frames.append(frame.to_ndarray(width=width, height=height, format="rgb24"))
    return frames


def read_video(path: str | os.PathLike[str]) -> Image:
    """Read every frame of the first video stream of an MP4/AVI/MOV/MKV/WebM file.

    Returns ``(T, H, W, 3)`` uint8 RGB with ``spatial_dims=3`` (axis 0 = time), modality
    "RGB", identity geometry and ``frame_names`` "0000", "0001", ... (wider when there are
    10,000 frames or more). All frames are held in memory. A display-rotation tag in the
    file is not applied. A file PyAV cannot open or decode, with no video stream or with no
    frames raises ``InputError`` ("cannot decode the video: ...") naming the path.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("does not exist or is not a file", path)
    try:
        import av  # noqa: F401
    except ImportError as error:
        raise InputError("reading a video needs PyAV: pip install av", path) from error
    try:
        frames = _decode_rgb(path)
    except InputError:
        raise
    except Exception as error:  # PyAV raises FFmpegError subclasses (and others) on bad input
        raise InputError(f"cannot decode the video: {_error_detail(error)}", path) from error
    if not frames:
        raise InputError("cannot decode the video: the video stream has no frames", path)
    array = np.stack(frames)
    del frames
    return Image(
        array=array,
        spatial_dims=3,
        modality="RGB",
        source=path,
        frame_names=[frame_name(i, len(array)) for i in range(len(array))],
        spacing_known=False,
    )


def _check_frames(frames_rgb: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames_rgb)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"an overlay video needs (T, H, W, 3) frames, got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"an overlay video needs uint8 frames, got {frames.dtype}")
    return frames


def _pad_to_even(frames: np.ndarray) -> np.ndarray:
    """Pad bottom/right with black to even height and width (yuv420p needs both even)."""
    _, height, width, _ = frames.shape
    pad_h, pad_w = height % 2, width % 2
    if not (pad_h or pad_w):
        return frames
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))


def _encode_mp4(file: Any, frames: np.ndarray, fps: float, codec: str) -> None:
    import av

    _, height, width, _ = frames.shape
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(file, mode="w", format="mp4") as container:
        if codec == "libx264":
            stream = container.add_stream(codec, rate=rate, options={"crf": "18"})
        else:
            stream = container.add_stream(codec, rate=rate)
            stream.bit_rate = max(1_000_000, int(width * height * float(fps) * 0.5))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for array in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))  # flush the encoder


def write_overlay_video(
    path: str | os.PathLike[str], frames_rgb: np.ndarray, fps: float = 10
) -> Path:
    """Write ``(T, H, W, 3)`` uint8 RGB frames as an MP4 video; return the path written.

    The video is H.264 (libx264, CRF 18, yuv420p) when PyAV has libx264, else MPEG-4 part 2
    (``mpeg4``); an odd height or width is padded with one black row/column at the
    bottom/right. The MP4 container is written whatever ``path``'s extension. If PyAV is not
    installed or no MP4 encoder works, an animated GIF is written instead with Pillow at
    ``path`` with the suffix ``.gif`` and that path is returned (check the return value).
    Writes are atomic: a temporary file next to the target is moved into place on success and
    removed on failure.
    """
    path = Path(path)
    frames = _check_frames(frames_rgb)
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    try:
        import av
    except ImportError:
        return write_animated_gif(path.with_suffix(".gif"), frames, fps)
    padded = _pad_to_even(frames)
    for codec in _MP4_CODECS:
        try:
            av.Codec(codec, "w")
        except Exception:  # UnknownCodecError: this FFmpeg build lacks the encoder
            continue
        try:
            with atomic_open(path) as file:
                _encode_mp4(file, padded, fps, codec)
        except av.FFmpegError:
            continue  # the encoder exists but refused to open or encode: try the next
        return path
    return write_animated_gif(path.with_suffix(".gif"), frames, fps)
