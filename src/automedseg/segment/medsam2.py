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
``segment.intensity``), axis 0 = a volume's slices or a video's frames; boxes are XYXY
inclusive pixels of a frame (``types.Boxes``); sam2 returns mask logits at the frame's size,
thresholded at 0. Everything runs on the CPU.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image as PILImage

from automedseg.errors import AutomedsegError, InputError, PromptError, WeightsError
from automedseg.types import Boxes, Image, Result

if TYPE_CHECKING:
    from automedseg.prompt.base import Prompter
    from automedseg.segment.litemedsam import LiteMedSAMPredictor

CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
"""SAM2.1 hiera-tiny, from the installed sam2 package's own configs."""
IMAGE_SIZES = (512, 1024)
NAME = "SAM2.1-hiera-tiny"
"""Recorded as the segmenter of its results (MedSAM2 is this architecture fine-tuned)."""
"""512 is MedSAM2's input size, 1024 SAM2.1's."""
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
        from automedseg.segment.litemedsam import load_state_dict

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


def find_seeds(
    frames: np.ndarray,
    prompter: Prompter,
    embedder: LiteMedSAMPredictor | None = None,
    stride: int = 4,
    link_iou: float = 0.1,
    times: dict[str, float] | None = None,
) -> tuple[dict[int, Boxes], list[int]]:
    """Seed boxes for ``track_boxes`` from a prompter run on every ``stride``-th frame.

    A prompter with ``uses_embedding`` (the LiteMedSAM head) gets the ``embedder``'s embedding
    of each of those frames (a ``LiteMedSAMPredictor``, used for prompting only). Boxes of one
    label on consecutive prompted frames that overlap by ``link_iou`` are taken as one object,
    which is seeded on the frame where its box scores highest. Returns the seeds (frame →
    boxes, scores kept) and, per object in seed order, its frame.
    """
    from automedseg.pipeline import check_boxes
    from automedseg.types import box_iou

    uses_embedding = getattr(prompter, "uses_embedding", False)
    if uses_embedding and embedder is None:
        raise AutomedsegError("this prompter needs LiteMedSAM's embedding: pass an embedder")
    times = {} if times is None else times
    tracks: list[list[tuple[int, np.ndarray, int, float]]] = []
    open_tracks: list[int] = []  # indices of tracks that reached the previous prompted frame
    for z in range(0, len(frames), max(1, stride)):
        start = time.perf_counter()
        if uses_embedding:
            embedder.set_image(frames[z])
            times["prompt_encoder"] = times.get("prompt_encoder", 0.0) + _lap(start)
            start = time.perf_counter()
            boxes = prompter.find(frames[z], embedder.embedding)
        else:
            boxes = prompter.find(frames[z])
        times["prompter"] = times.get("prompter", 0.0) + _lap(start)
        boxes = check_boxes(boxes, frames.shape[1:3])
        extended: list[int] = []
        for i in np.argsort(-boxes.scores, kind="stable"):
            box, label, score = boxes.xyxy[i], int(boxes.labels[i]), float(boxes.scores[i])
            best, best_iou = None, link_iou
            for t in open_tracks:
                _, last_box, last_label, _ = tracks[t][-1]
                if t in extended or last_label != label:
                    continue
                iou = float(box_iou(box[None], last_box[None])[0, 0])
                if iou >= best_iou:
                    best, best_iou = t, iou
            if best is None:
                tracks.append([])
                best = len(tracks) - 1
            tracks[best].append((z, box, label, score))
            extended.append(best)
        open_tracks = extended
    seeds: dict[int, list[tuple[np.ndarray, int, float]]] = {}
    for track in tracks:
        z, box, label, score = max(track, key=lambda entry: entry[3])
        seeds.setdefault(z, []).append((box, label, score))
    out = {
        z: Boxes(
            np.array([b for b, _, _ in found], np.float32),
            np.array([lab for _, lab, _ in found]),
            np.array([s for _, _, s in found], np.float32),
        )
        for z, found in sorted(seeds.items())
    }
    return out, [z for z, boxes in out.items() for _ in range(len(boxes))]


def segment_image_sam2(
    image: Image,
    prompter: Prompter,
    model: torch.nn.Module,
    slice_index: int | None = None,
    embedder: LiteMedSAMPredictor | None = None,
    prompt_stride: int = 4,
    progress: bool = False,
    times: dict[str, float] | None = None,
) -> Result:
    """``pipeline.segment_image`` with SAM2's memory instead of slice-to-slice boxes.

    A volume or video is segmented along axis 0; a 2D image is a one-frame video. Fixed boxes
    (``pipeline.FixedBoxes``) seed their objects on ``slice_index`` (default: the middle
    slice; frame 0 of a 2D image); any other prompter finds the seeds (see ``find_seeds``).
    Seconds per stage are added to ``times`` when given.
    """
    from automedseg.pipeline import FixedBoxes, check_boxes
    from automedseg.segment.intensity import to_unit_range

    unit = to_unit_range(image)
    frames = unit[None] if image.spatial_dims == 2 else unit
    depth = len(frames)
    times = {} if times is None else times
    if isinstance(prompter, FixedBoxes):
        z = (depth // 2 if slice_index is None else slice_index) if image.spatial_dims == 3 else 0
        if not 0 <= z < depth:
            raise PromptError(f"slice {z} is outside the volume's {depth} slices (0..{depth - 1})")
        boxes = check_boxes(prompter.boxes, frames.shape[1:3])
        seeds, seed_frames = {z: boxes}, [z] * len(boxes)
    else:
        seeds, seed_frames = find_seeds(frames, prompter, embedder, prompt_stride, times=times)
    tracking = track_boxes(model, frames, seeds, progress)
    for stage, seconds in tracking.times.items():
        times[stage] = times.get(stage, 0.0) + seconds
    boxes = Boxes.concat([seeds[z] for z in sorted(seeds)])
    if image.spatial_dims == 2:
        return Result(
            tracking.label_map[0], boxes, instance_map=tracking.instance_map[0], segmenter=NAME
        )
    return Result(
        tracking.label_map,
        boxes,
        box_slices=np.asarray(seed_frames, int),
        instance_map=tracking.instance_map,
        segmenter=NAME,
    )


def _lap(start: float) -> float:
    return time.perf_counter() - start
