"""YOLO-NAS as a box prompter: an image in, class boxes with scores out.

The network comes from the ``modern-yolonas`` package (state_dict-compatible with
super-gradients' YOLO-NAS); this module writes out the tree, loads and checks weights, and
implements the preprocessing and postprocessing, written once here and used by training too:

* input: an image already in [0, 1] (see ``automedseg.intensity``), (H, W) or (H, W, 3); a gray
  image is repeated into 3 channels (the network's stem takes RGB);
* **letterbox**: resize the longest side to ``input_size`` (bilinear, antialiased when
  shrinking), keep the aspect ratio, pad **bottom/right** with 0 to a square — no centring,
  so going back is a division by the scale;
* the network gives, for every anchor, a box (continuous XYXY in input pixels) and a sigmoid
  score per class; boxes scoring at least ``score_threshold`` for a class are kept and
  non-maximum suppression runs per class at ``iou_threshold``;
* boxes are mapped back to the original image and returned as XYXY **inclusive** integer
  pixel corners clipped to the image (``types.Boxes``); class index ``i`` → the ``i``-th
  label value of ``labels``.

A continuous box ``[a, b)`` covers the pixels ``round(a) … round(b) - 1``; an inclusive pixel
box ``x0 … x1`` is the continuous box ``[x0, x1 + 1)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from automedseg.checkpoints import load_checkpoint
from automedseg.errors import InputError, WeightsError
from automedseg.prompt.base import card_propagation
from automedseg.types import Boxes

SIZES = ("s", "m", "l")
KIND = "yolonas"


def build_yolonas(num_classes: int, size: str = "s") -> nn.Module:
    """YOLO-NAS (S, M or L) for ``num_classes`` classes, randomly initialised.

    The tree is written out: backbone (stem, 4 stages, SPP) → PAN neck → 3 DFL heads at
    strides 8/16/32, with the published architecture parameters of each size.
    """
    from modern_yolonas.backbone.backbone import YoloNASBackbone
    from modern_yolonas.configs import CONFIGS
    from modern_yolonas.head.dfl import NDFLHeads
    from modern_yolonas.model import YoloNAS
    from modern_yolonas.neck.pan import YoloNASPANNeckWithC2

    if size not in SIZES:
        raise ValueError(f"YOLO-NAS size must be one of {SIZES}, got {size!r}")
    if num_classes < 1:
        raise ValueError(f"YOLO-NAS needs at least one class, got {num_classes}")
    config = CONFIGS[f"yolo_nas_{size}"]
    backbone = YoloNASBackbone(
        in_channels=3,
        stem_out_channels=config["backbone"]["stem_out_channels"],
        stages_config=config["backbone"]["stages"],
        spp_output_channels=config["backbone"]["spp_output_channels"],
        spp_k=config["backbone"]["spp_k"],
    )
    neck = YoloNASPANNeckWithC2(in_channels=backbone.out_channels, **config["neck"])
    heads = NDFLHeads(
        num_classes=num_classes, in_channels=tuple(neck.out_channels), **config["heads"]
    )
    return YoloNAS(backbone=backbone, neck=neck, heads=heads)


def fuse_for_inference(model: nn.Module) -> nn.Module:
    """Fold every RepVGG block's branches and batch norms into one convolution (in place).

    The same outputs (to float rounding), about 1.6 times faster on a CPU; the model can no
    longer be trained and its state_dict no longer matches the checkpoints'.
    """
    model.eval()
    for module in model.modules():
        if hasattr(module, "full_fusion"):
            module.full_fusion()
    return model


# --- preprocessing and postprocessing, shared with training -------------------------------


def resized_shape(shape: tuple[int, int], size: int) -> tuple[int, int]:
    """(h, w) after resizing the longest side of ``shape`` to ``size`` (aspect kept)."""
    h, w = shape
    scale = size / max(h, w)
    return max(1, min(size, round(h * scale))), max(1, min(size, round(w * scale)))


def resize_image(image: np.ndarray, shape: tuple[int, int]) -> torch.Tensor:
    """An (H, W) or (H, W, C) array → a (C, h, w) float32 tensor, bilinear (antialiased)."""
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    tensor = tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    if tuple(tensor.shape[1:]) == tuple(shape):
        return tensor.clone()
    shrinking = shape[0] < tensor.shape[1] or shape[1] < tensor.shape[2]
    resized = F.interpolate(
        tensor[None], size=shape, mode="bilinear", align_corners=False, antialias=shrinking
    )
    return resized[0]


def letterbox(image: np.ndarray, size: int) -> tuple[torch.Tensor, tuple[float, float]]:
    """(3, size, size) input tensor and the (x, y) scale from image pixels to input pixels.

    ``image`` is (H, W) or (H, W, 3) in [0, 1]; gray is repeated into 3 channels; the resized
    image sits at the top-left, the bottom/right padding is 0.
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise InputError(f"a prompter needs an (H, W) or (H, W, 3) image, got {image.shape}")
    if min(image.shape[:2]) < 1:
        raise InputError(f"the image is empty (shape {image.shape})")
    h, w = image.shape[:2]
    new_h, new_w = resized_shape((h, w), size)
    content = resize_image(image, (new_h, new_w)).clamp_(0.0, 1.0)
    canvas = torch.zeros(3, size, size, dtype=torch.float32)
    canvas[:, :new_h, :new_w] = content  # broadcasts 1 channel to 3
    return canvas, (new_w / w, new_h / h)


def select_boxes(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    score_threshold: float,
    iou_threshold: float,
    max_detections: int = 100,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image's decoded predictions → (xyxy (D, 4), scores (D,), class indices (D,)).

    ``boxes`` (N, 4) continuous XYXY, ``scores`` (N, C) per-class probabilities. An anchor
    may give a box for each class scoring at least ``score_threshold``; NMS is per class;
    the ``max_detections`` best are kept, best first.
    """
    import torchvision

    anchor, klass = (scores >= score_threshold).nonzero(as_tuple=True)
    kept_scores = scores[anchor, klass]
    if len(kept_scores) > 4096:  # bound the NMS work on a poorly trained model
        top = kept_scores.topk(4096).indices
        anchor, klass, kept_scores = anchor[top], klass[top], kept_scores[top]
    kept_boxes = boxes[anchor]
    keep = torchvision.ops.batched_nms(kept_boxes, kept_scores, klass, iou_threshold)
    keep = keep[:max_detections]
    return kept_boxes[keep], kept_scores[keep], klass[keep]


def to_pixel_boxes(
    xyxy: np.ndarray, scale_xy: tuple[float, float], shape: tuple[int, int]
) -> np.ndarray:
    """Continuous XYXY boxes in input pixels → inclusive integer corners in the image."""
    h, w = shape
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    scale = np.array([scale_xy[0], scale_xy[1], scale_xy[0], scale_xy[1]])
    original = xyxy / scale
    x0 = np.clip(np.round(original[:, 0]), 0, w - 1)
    y0 = np.clip(np.round(original[:, 1]), 0, h - 1)
    x1 = np.clip(np.round(original[:, 2]) - 1, x0, w - 1)
    y1 = np.clip(np.round(original[:, 3]) - 1, y0, h - 1)
    return np.stack([x0, y0, x1, y1], axis=1).astype(np.float32)


# --- the prompter -------------------------------------------------------------------------


@dataclass
class YoloNasPrompter:
    """A YOLO-NAS network and what it needs to answer ``find`` (see the module docstring)."""

    model: nn.Module
    labels: dict[int, str]
    """Label value → class name, in the network's class-index order."""
    input_size: int = 320
    score_threshold: float = 0.25
    iou_threshold: float = 0.5
    max_detections: int = 100
    propagation: dict = field(default_factory=dict)
    """Propagation settings chosen on validation (``propagate.settings_of``)."""

    def __post_init__(self) -> None:
        num_classes = getattr(getattr(self.model, "heads", None), "num_classes", None)
        if num_classes is not None and num_classes != len(self.labels):
            raise ValueError(
                f"the network has {num_classes} classes but {len(self.labels)} labels were given"
            )
        self.model.eval()

    def find(self, image: np.ndarray, embedding: object | None = None) -> Boxes:
        """Boxes (XYXY inclusive pixels of ``image``) with label values and scores."""
        batch, scale = letterbox(image, self.input_size)
        self.model.eval()
        with torch.inference_mode():
            boxes, scores = self.model(batch[None])
            xyxy, kept_scores, classes = select_boxes(
                boxes[0], scores[0], self.score_threshold, self.iou_threshold, self.max_detections
            )
        h, w = np.asarray(image).shape[:2]
        xyxy, kept_scores, classes = xyxy.numpy(), kept_scores.numpy(), classes.numpy()
        # a box wholly in the padding says nothing about the image
        inside = (xyxy[:, 0] < w * scale[0]) & (xyxy[:, 1] < h * scale[1])
        inside &= (xyxy[:, 2] > 0) & (xyxy[:, 3] > 0)
        values = np.array(list(self.labels), dtype=np.int64)
        return Boxes(
            to_pixel_boxes(xyxy[inside], scale, (h, w)),
            values[classes[inside]],
            kept_scores[inside],
        )


# --- loading ------------------------------------------------------------------------------


def load_yolonas_prompter(
    path: str | Path,
    *,
    num_classes: int | None = None,
    labels: dict[int, str] | None = None,
    size: str = "s",
    input_size: int | None = None,
    score_threshold: float | None = None,
    iou_threshold: float | None = None,
    fuse: bool = True,
) -> YoloNasPrompter:
    """A prompter from an automedseg model card (``.json`` beside its ``.safetensors``), or
    from a plain super-gradients / modern-yolonas state_dict (``.pth``/``.pt``).

    A card gives everything; the keyword arguments override its thresholds. A plain
    state_dict needs ``size`` (default "s"); ``num_classes`` is read from the weights when not
    given, ``labels`` default to values 1…N named ``class_1``…, ``input_size`` to 640 (the
    super-gradients training size). ``fuse`` folds the RepVGG branches for faster inference
    (``fuse_for_inference``). Raises ``WeightsError`` when the file is not YOLO-NAS weights or
    does not fit the architecture.

    Note: super-gradients itself letterboxes centred with grey (114) padding; this prompter
    pads bottom/right with black, which suits models trained here.
    """
    path = Path(path)
    if path.suffix.lower() in (".pth", ".pt", ".ckpt", ".bin"):
        state = _read_plain_state(path)
        if num_classes is None:
            num_classes = _count_classes(state, path)
        if labels is None:
            labels = {i + 1: f"class_{i + 1}" for i in range(num_classes)}
        card = {
            "architecture": {"size": size, "num_classes": num_classes, "input_size": 640},
            "labels": labels,
        }
    else:
        card, state = load_checkpoint(path)
        if card.get("kind") != KIND:
            raise WeightsError(f"not a YOLO-NAS model card (kind is {card.get('kind')!r})", path)
    architecture = card.get("architecture") or {}
    try:
        size = str(architecture.get("size", "s"))
        num_classes = int(architecture["num_classes"])
        labels = {int(k): str(v) for k, v in (labels or card["labels"]).items()}
        input_size = int(input_size or architecture.get("input_size", 320))
    except (KeyError, TypeError, ValueError) as error:
        raise WeightsError(f"the model card lacks a valid {error}", path) from None
    if size not in SIZES:
        raise WeightsError(f"unknown YOLO-NAS size {size!r} (expected one of {SIZES})", path)
    if len(labels) != num_classes:
        raise WeightsError(f"{len(labels)} labels given for a {num_classes}-class model", path)
    model = build_yolonas(num_classes, size)
    _load_state(model, state, path, f"YOLO-NAS-{size.upper()} with {num_classes} class(es)")
    if fuse:
        fuse_for_inference(model)
    return YoloNasPrompter(
        model,
        labels,
        input_size=input_size,
        score_threshold=float(
            score_threshold if score_threshold is not None else card.get("score_threshold", 0.25)
        ),
        iou_threshold=float(
            iou_threshold if iou_threshold is not None else card.get("iou_threshold", 0.5)
        ),
        propagation=card_propagation(card, path),
    )


def _read_plain_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError("weights file does not exist", path)
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling errors come in many types, with long messages
        text = str(error).strip()
        first_line = text.splitlines()[0] if text else type(error).__name__
        raise WeightsError(f"not a plain PyTorch state_dict ({first_line})", path) from None
    # Unwrap the usual containers: super-gradients ('ema_net'/'net'), trainers ('state_dict',
    # 'model_state_dict'), and strip DDP/EMA/Lightning prefixes from the keys.
    for key in ("ema_net", "net", "model_state_dict", "state_dict", "model"):
        if isinstance(raw, dict) and isinstance(raw.get(key), dict):
            raw = raw[key]
            break
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise WeightsError("not a state_dict of tensors", path)
    state = {}
    for key, value in raw.items():
        for prefix in ("module.", "net.", "ema_model.", "model."):
            if key.startswith(prefix):
                key = key[len(prefix) :]
        state[key] = value
    return state


def _count_classes(state: dict[str, torch.Tensor], path: Path) -> int:
    weight = state.get("heads.head1.cls_pred.weight")
    if weight is None:
        raise WeightsError("not YOLO-NAS weights (no heads.head1.cls_pred.weight)", path)
    return int(weight.shape[0])


def _load_state(model: nn.Module, state: dict, path: Path, what: str) -> None:
    """Load ``state`` into ``model`` or raise a one-line ``WeightsError`` saying why not."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if wrong:
        key = wrong[0]
        raise WeightsError(
            f"weights do not fit {what}: {len(wrong)} tensor(s) of another shape, e.g. {key} "
            f"is {list(state[key].shape)} in the file, {list(expected[key].shape)} in the model",
            path,
        )
    if missing or unexpected:
        example = (missing or unexpected)[0]
        raise WeightsError(
            f"weights do not fit {what}: {len(missing)} tensor(s) missing, "
            f"{len(unexpected)} unexpected (e.g. {example})",
            path,
        )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)
