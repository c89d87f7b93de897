"""MedSAM2 / SAM2.1-tiny through Meta's ``sam2`` package: box prompts on a few frames, then
SAM2's memory carries every object through the whole video or volume.

The ``sam2`` package (optional: ``make setup`` installs it) provides the model and its video
predictor; this module adapts it at two seams instead of forking it:

* **Frames from arrays.** sam2's ``init_state`` only reads a path. Here its frame loader is
  swapped, for the duration of the call, for one that hands over our in-memory frames; each
  frame is prepared when sam2 asks for it (to encode it), so no second copy of the video at
  the model's size is kept.
* **Preprocessing** is sam2's own loader's (``sam2.utils.misc.load_video_frames``), which
  MedSAM2's inference scripts repeat: 8-bit RGB, stretched (aspect ratio not kept) to
  ``image_size`` × ``image_size`` with PIL's default (bicubic) resampling, divided by 255,
  minus the ImageNet mean, divided by its standard deviation.

Contracts: frames are ``(T, H, W)`` or ``(T, H, W, 3)`` floats in [0, 1] (see
``automedseg.intensity``), axis 0 = a volume's slices or a video's frames; boxes are XYXY
inclusive pixels of a frame (``types.Boxes``); sam2 returns mask logits at the frame's size,
thresholded at 0. Everything runs on the CPU.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image as PILImage

from automedseg.errors import AutomedsegError, InputError, WeightsError
from automedseg.segment import SAM2_IMAGE_SIZES
from automedseg.segment.litemedsam import load_state_dict
from automedseg.types import Boxes

CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
"""SAM2.1 hiera-tiny, from the installed sam2 package's own configs."""
IMAGE_SIZES = SAM2_IMAGE_SIZES
NAME = "SAM2.1-hiera-tiny"
"""Recorded as the segmenter of its results (MedSAM2 is this architecture fine-tuned)."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INSTALL_HINT = (
    "the medsam2 segmenter needs the sam2 package: "
    "SAM2_BUILD_CUDA=0 pip install --no-build-isolation sam2==1.1.0 (or run `make setup`)"
)


def import_sam2() -> None:
    """Import sam2, or raise ``AutomedsegError`` with the one line that says how to install it."""
    try:
        import sam2.build_sam  # noqa: F401
    except ModuleNotFoundError as error:
        raise AutomedsegError(INSTALL_HINT) from error


def build_sam2(
    image_size: int = 512, checkpoint: Path | None = None, sha256: str | None = None
) -> torch.nn.Module:
    """SAM2.1-tiny's video predictor (``sam2.sam2_video_predictor.SAM2VideoPredictor``) on the
    CPU, in eval mode, for ``image_size`` × ``image_size`` input (512 as MedSAM2, or 1024).

    ``checkpoint``: a MedSAM2 or SAM2.1-tiny file, ``{"model": state_dict}`` or a bare
    state_dict, loaded with ``torch.load(..., weights_only=True)`` and checked against
    ``sha256`` when given. A missing or unreadable file, or weights that do not fit
    SAM2.1-tiny, raise ``WeightsError``. The parameters do not depend on the image size, so a
    checkpoint trained at 1024 also loads at 512 (and vice versa): pick the size it was trained
    at. Without a checkpoint the weights are random — for tests and benchmarks only.
    """
    if image_size not in IMAGE_SIZES:
        raise AutomedsegError(f"image size must be one of {IMAGE_SIZES}, got {image_size}")
    import_sam2()
    from sam2.build_sam import build_sam2_video_predictor

    state = None
    if checkpoint is not None:
        state = load_state_dict(Path(checkpoint), sha256)  # weights_only=True, {"model": …}
    feat = image_size // 16  # the memory attention's RoPE grid, as in MedSAM2's 512 config
    overrides = [
        f"++model.image_size={image_size}",
        f"++model.memory_attention.layer.self_attention.feat_sizes=[{feat},{feat}]",
        f"++model.memory_attention.layer.cross_attention.feat_sizes=[{feat},{feat}]",
    ]
    model = build_sam2_video_predictor(CONFIG, None, device="cpu", hydra_overrides_extra=overrides)
    # Hole filling needs sam2's CUDA extension; without it sam2 skips it with a warning.
    model.fill_hole_area = 0
    if state is not None:
        _check_fit(model, state, Path(checkpoint))
        model.load_state_dict(state, strict=True)
    return model.eval()


def _check_fit(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Raise ``WeightsError`` with a one-line reason when ``state`` does not fit ``model``."""
    expected = model.state_dict()
    common = expected.keys() & state.keys()
    if not common:
        raise WeightsError(
            f"not a SAM2.1-tiny checkpoint: none of its {len(state)} tensors is a SAM2 parameter",
            path,
        )
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    wrong = [k for k in sorted(common) if tuple(state[k].shape) != tuple(expected[k].shape)]
    problems = []
    if wrong:
        k = wrong[0]
        problems.append(
            f"{len(wrong)} tensor(s) of another shape (e.g. {k}: file "
            f"{tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
        )
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if problems:
        raise WeightsError("weights do not fit SAM2.1-tiny: " + "; ".join(problems), path)


def to_model_input(frame: np.ndarray, image_size: int) -> torch.Tensor:
    """(3, S, S) float32 model input from one frame in [0, 1], (H, W), (H, W, 1) or (H, W, 3);
    the same numbers as sam2's frame loader gives for the frame saved as an 8-bit image."""
    array = np.asarray(frame)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] == 3)):
        raise InputError(f"medsam2 needs gray or RGB frames, got a frame of shape {array.shape}")
    pixels = np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)
    rgb = PILImage.fromarray(pixels).convert("RGB").resize((image_size, image_size))
    tensor = torch.from_numpy(np.asarray(rgb) / 255.0).permute(2, 0, 1).float()
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None]
    return (tensor - mean) / std


class _Frames:
    """sam2's ``inference_state["images"]``: frame i is prepared when sam2 asks for it."""

    def __init__(self, frames: np.ndarray, image_size: int) -> None:
        self.frames, self.image_size = frames, image_size

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> torch.Tensor:
        return to_model_input(self.frames[index], self.image_size)


@dataclass
class Tracking:
    """What ``track_boxes`` returns."""

    label_map: np.ndarray
    """(T, H, W) each object painted with its label; where objects overlap, the higher logit."""
    instance_map: np.ndarray
    """(T, H, W) object numbers 1..N, in the order the seeds were given."""
    times: dict[str, float] = field(default_factory=dict)
    """Seconds per stage: "sam2_encoder" (image encoder) and "sam2_tracking" (everything else:
    seeding, memory attention, memory encoder, mask decoder)."""
    encoded_frames: int = 0
    """How often the image encoder ran (the number of frames, plus the few sam2 re-encodes)."""


def track_boxes(
    model: torch.nn.Module,
    frames: np.ndarray,
    seeds: dict[int, Boxes],
    progress: bool = False,
) -> Tracking:
    """Each seed box (frame index → boxes) becomes one object, followed through all frames.

    sam2's video predictor: ``add_new_points_or_box`` per box, then ``propagate_in_video``
    forward and backward (``reverse=True``) from the earliest seed frame.
    """
    frames = np.asarray(frames)
    shape = frames.shape[:3]
    objects = [
        (int(z), xyxy, int(label))
        for z in sorted(seeds)
        for xyxy, label in zip(seeds[z].xyxy, seeds[z].labels, strict=True)
    ]
    tracking = Tracking(np.zeros(shape, np.uint8), np.zeros(shape, np.uint8))
    if not objects:
        return tracking
    for z, _, _ in objects:
        if not 0 <= z < shape[0]:
            raise InputError(f"seed frame {z} is outside the {shape[0]} frames")
    labels = np.array([0] + [label for _, _, label in objects])
    instance = np.zeros(shape, np.uint8 if len(objects) < 256 else np.uint16)
    label_map = np.zeros(shape, np.uint8 if labels.max() < 256 else np.uint16)
    start = time.perf_counter()
    images = _Frames(frames, model.image_size)
    with _sam2_seams(model, images, shape[1:], progress and shape[0] > 1) as encoder:
        state = model.init_state(video_path="<in memory>")
        for number, (z, xyxy, _) in enumerate(objects, start=1):
            model.add_new_points_or_box(state, frame_idx=z, obj_id=number, box=xyxy)
        for reverse in (False, True):
            for z, ids, logits in model.propagate_in_video(state, reverse=reverse):
                scores = logits[:, 0].numpy()  # (N, H, W), sam2's object order
                best = scores.argmax(axis=0)
                numbers = np.asarray(ids)[best]
                instance[z] = np.where(scores.max(axis=0) > 0, numbers, 0)
                label_map[z] = labels[instance[z]]
    total = time.perf_counter() - start
    tracking.times = {"sam2_encoder": encoder.seconds, "sam2_tracking": total - encoder.seconds}
    tracking.encoded_frames = encoder.calls
    tracking.label_map, tracking.instance_map = label_map, instance
    return tracking


@dataclass
class _Timer:
    seconds: float = 0.0
    calls: int = 0


@contextmanager
def _sam2_seams(
    model: torch.nn.Module, images: _Frames, size_hw: tuple[int, int], progress: bool
) -> Iterator[_Timer]:
    """While open: sam2's frame loader answers ``images``, its progress bars are shown only
    with ``progress``, and the model's image encoder is timed."""
    import sam2.sam2_video_predictor as predictor_module

    timer = _Timer()
    encode = model.forward_image

    def timed_encode(image: torch.Tensor) -> dict:
        start = time.perf_counter()
        out = encode(image)
        timer.seconds += time.perf_counter() - start
        timer.calls += 1
        return out

    def load_frames(**_: object) -> tuple[_Frames, int, int]:
        return images, int(size_hw[0]), int(size_hw[1])

    loader, bar = predictor_module.load_video_frames, predictor_module.tqdm
    predictor_module.load_video_frames = load_frames
    if not progress:
        predictor_module.tqdm = lambda iterable, **_: iterable
    model.forward_image = timed_encode
    try:
        yield timer
    finally:
        predictor_module.load_video_frames, predictor_module.tqdm = loader, bar
        del model.forward_image
