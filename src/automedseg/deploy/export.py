"""Export the pipeline's PyTorch models to ONNX, each checked against PyTorch.

Four models, each written as ``<path>.onnx`` with a card ``<path>.json`` beside it (both
atomically; the runtime in ``runtime.onnx`` reads them back without torch):

============================  =================================  ==============================
model                         inputs                             outputs
============================  =================================  ==============================
``litemedsam_image_encoder``  image (1, 3, 256, 256)             embedding (1, 256, 64, 64)
``litemedsam_mask_decoder``   embedding (1, 256, 64, 64),        logits (N, 1, 256, 256),
                              boxes (N, 4) XYXY in 256-space     iou (N, 1); N is dynamic
``head_prompter``             embedding (1, 256, 64, 64)         logits (1, K, 128, 128)
``backbone_prompter``         image_i (V, 3, H, W) normalised    logits_i (V, K, H, W) per
                              per member i, H, W multiples of    member; H, W dynamic, V = 2
                              32                                 with the mirrored view
``yolonas_prompter``          image (1, 3, S, S) letterboxed     boxes (1, A, 4) XYXY input px,
                                                                 scores (1, A, C) sigmoid
============================  =================================  ==============================

All in float32. The exporter is ``torch.onnx.export(..., dynamo=True)`` (torch.export, the
maintained path; the TorchScript one is deprecated) at the fixed opset ``OPSET``: 20, the first
with a native ``Gelu`` operator (at 18 each GELU became five element-wise ops, 27 % of the
encoder's time in ONNX Runtime; with ``Gelu`` the float32 encoder is about 25 % faster).

Fidelity: the exported graph runs in ONNX Runtime on the given check inputs (or seeded random
ones) and each output is compared with PyTorch's. Export fails unless, for every output,
``max |onnx - torch| <= MAX_RELATIVE_DIFF * max |torch|`` and the cosine similarity is at
least ``MIN_COSINE``. Why these numbers: both sides compute in float32 and differ only by
kernel choice and operation order (fused attention, GELU, layer norm), which measures about
1e-5 of the output range here (encoder 3e-6 on embeddings of magnitude 0.6; decoder 5e-5 on
logits of magnitude ~20). A 1e-3 relative bound leaves two orders of magnitude for other
inputs and machines, while a real export error (a wrong op, a lost branch, a baked-in shape)
moves outputs by whole units. A mask pixel can flip only where |logit| is below the
difference, i.e. on the boundary; the masks' Dice is reported by ``scripts/export_onnx.py``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

import automedseg
from automedseg import io
from automedseg.checkpoints import file_sha256
from automedseg.errors import WeightsError
from automedseg.runtime.onnx import (
    BACKBONE,
    DECODER,
    ENCODER,
    HEAD,
    KIND,
    ONNX_CARD_VERSION,
    YOLONAS,
    card_path_for,
    make_session,
)
from automedseg.segment.litemedsam import PACKAGED_WEIGHTS_SHA256, LiteMedSAM
from automedseg.segment.model_space import EMBEDDING_CHANNELS, EMBEDDING_SIZE, IMAGE_SIZE

if TYPE_CHECKING:
    from automedseg.prompt.backbone import BackbonePrompter
    from automedseg.prompt.head import HeadPrompter
    from automedseg.prompt.yolonas import YoloNasPrompter

OPSET = 20
MAX_RELATIVE_DIFF = 1e-3
MIN_COSINE = 0.9999

Inputs = tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class Exported:
    """Where an export went and how closely ONNX Runtime reproduces PyTorch."""

    onnx_path: Path
    card_path: Path
    size_mb: float
    max_abs_diff: float
    """Largest |onnx - torch| over all outputs and check inputs."""
    cosine: float
    """Smallest cosine similarity of an output with PyTorch's."""


class MaskDecoderForExport(nn.Module):
    """Prompt encoder + mask decoder of LiteMedSAM as one graph: (embedding, boxes) → masks.

    The same computation as ``LiteMedSAM.decode``, also returning the IoU prediction."""

    def __init__(self, prompt_encoder: nn.Module, mask_decoder: nn.Module) -> None:
        super().__init__()
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder

    def forward(
        self, embedding: torch.Tensor, boxes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        sparse, dense = self.prompt_encoder(points=None, boxes=boxes[:, None, :], masks=None)
        return self.mask_decoder(
            image_embeddings=embedding,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )


def export_image_encoder(
    model: LiteMedSAM,
    path: str | Path,
    check_inputs: Sequence[Inputs] | None = None,
    weights_sha256: str = PACKAGED_WEIGHTS_SHA256,
    delta_sha256: str | None = None,
) -> Exported:
    """LiteMedSAM's image encoder: a preprocessed (1, 3, 256, 256) image → its embedding.

    ``check_inputs``: tuples ``(image,)`` of preprocessed images (``litemedsam.preprocess``);
    by default one seeded random image in [0, 1]. ``delta_sha256``: the SHA-256 (its card's
    ``sha256``) of the fine-tuning delta loaded into ``model``, if any, for the card.
    """
    generator = torch.Generator().manual_seed(0)
    example = (torch.rand(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator),)
    return export_module(
        model.image_encoder,
        example,
        path,
        ENCODER,
        input_names=["image"],
        output_names=["embedding"],
        check_inputs=check_inputs or [example],
        source=_litemedsam_source(weights_sha256, delta_sha256),
    )


def export_student_encoder(
    student: nn.Module, path: str | Path, card: dict[str, Any], check_inputs: Sequence[Inputs]
) -> Exported:
    """A distilled stand-in for the image encoder (``train.encoder``, its ``card``): the same
    input and output as ``export_image_encoder``'s, so it drops in where the encoder was."""
    teacher = card.get("teacher", {})
    source = {"model": "distilled encoder (automedseg train encoder)",
              "student_sha256": card["sha256"],
              "teacher": _litemedsam_source(teacher.get("sha256", PACKAGED_WEIGHTS_SHA256),
                                            teacher.get("delta_sha256"))}  # fmt: skip
    return export_module(
        student, check_inputs[0], path, ENCODER, input_names=["image"],
        output_names=["embedding"], check_inputs=check_inputs, source=source,
    )  # fmt: skip


def export_mask_decoder(
    model: LiteMedSAM,
    path: str | Path,
    check_inputs: Sequence[Inputs] | None = None,
    weights_sha256: str = PACKAGED_WEIGHTS_SHA256,
    max_boxes: int = 1024,
    delta_sha256: str | None = None,
) -> Exported:
    """LiteMedSAM's prompt encoder + mask decoder for N boxes (N dynamic, 1 … ``max_boxes``).

    ``check_inputs``: tuples ``(embedding (1, 256, 64, 64), boxes (N, 4) in 256-space)``; by
    default a seeded random embedding with 1 and 3 boxes. ``delta_sha256`` as for the encoder.
    """
    generator = torch.Generator().manual_seed(0)
    embedding = torch.randn(1, EMBEDDING_CHANNELS, EMBEDDING_SIZE, EMBEDDING_SIZE) * 0.3
    boxes = torch.tensor([[20.0, 30.0, 120.0, 150.0], [60.0, 40.0, 250.0, 200.0]])
    random_boxes = torch.sort(torch.rand(3, 2, 2, generator=generator) * 255, dim=1).values
    default = [(embedding, boxes[:1]), (embedding, random_boxes.reshape(3, 4))]
    num_boxes = torch.export.Dim("num_boxes", min=1, max=max_boxes)
    return export_module(
        MaskDecoderForExport(model.prompt_encoder, model.mask_decoder),
        (embedding, boxes),  # traced with 2 boxes: torch.export specialises a size of 1
        path,
        DECODER,
        input_names=["embedding", "boxes"],
        output_names=["logits", "iou"],
        dynamic_shapes={"embedding": None, "boxes": {0: num_boxes}},
        check_inputs=check_inputs or default,
        source=_litemedsam_source(weights_sha256, delta_sha256),
    )


def _litemedsam_source(weights_sha256: str, delta_sha256: str | None) -> dict[str, Any]:
    source = {"model": "LiteMedSAM", "weights_sha256": weights_sha256}
    return source if delta_sha256 is None else {**source, "delta_sha256": delta_sha256}


def export_head_prompter(
    prompter: HeadPrompter,
    path: str | Path,
    weights_sha256: str,
    check_inputs: Sequence[Inputs] | None = None,
    segmenter_sha256: str = PACKAGED_WEIGHTS_SHA256,
    task: str | None = None,
) -> Exported:
    """A ``prompt.head.HeadPrompter``'s network: embedding → (1, K, 128, 128) class logits.

    ``weights_sha256`` is the prompter card's ``sha256``; the card written here also carries
    the labels and thresholds, so the ONNX prompter needs nothing else. ``check_inputs``:
    tuples ``(embedding,)``; by default one seeded random embedding.
    """
    generator = torch.Generator().manual_seed(0)
    shape = (1, EMBEDDING_CHANNELS, EMBEDDING_SIZE, EMBEDDING_SIZE)
    example = (torch.randn(shape, generator=generator) * 0.3,)
    return export_module(
        prompter.head,
        example,
        path,
        HEAD,
        input_names=["embedding"],
        output_names=["logits"],
        check_inputs=check_inputs or [example],
        source={"model": "EmbeddingHead", "weights_sha256": weights_sha256},
        extra={
            "task": task,
            "architecture": prompter.head.architecture(),
            "labels": {str(k): v for k, v in prompter.labels.items()},
            "score_threshold": prompter.score_threshold,
            "pixel_threshold": prompter.pixel_threshold,
            "min_area_fraction": prompter.min_area_fraction,
            "propagation": {"settings": prompter.propagation},
            "segmenter_sha256": segmenter_sha256,
        },
    )


class MembersForExport(nn.Module):
    """A backbone prompter's members as one graph: member i's input → member i's logits."""

    def __init__(self, nets: Sequence[nn.Module]) -> None:
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def forward(self, *images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(net(image) for net, image in zip(self.nets, images, strict=True))


def export_backbone_prompter(
    prompter: BackbonePrompter,
    path: str | Path,
    weights_sha256: str,
    check_inputs: Sequence[Inputs] | None = None,
    task: str | None = None,
) -> Exported:
    """A ``prompt.backbone.BackbonePrompter``'s members: for each, normalised (V, 3, H, W)
    views (H, W multiples of 32, dynamic; V = 2 with the mirror image) → (V, K, H, W) class
    logits. The card carries the members, labels, thresholds and refinement. ``check_inputs``:
    tuples with one input per member; by default seeded random images of two shapes."""
    from automedseg.prompt.backbone_space import STRIDE

    generator = torch.Generator().manual_seed(0)
    count, views = len(prompter.nets), 2 if prompter.flip else 1
    sides = [size - size % STRIDE for size in prompter.sizes]
    example = tuple(torch.randn(views, 3, s, s, generator=generator) for s in sides)
    other = tuple(torch.randn(views, 3, s, max(STRIDE, s - 2 * STRIDE), generator=generator)
                  for s in sides)  # fmt: skip
    shapes = tuple({2: STRIDE * torch.export.Dim(f"rows_{i}", min=1, max=64),
                    3: STRIDE * torch.export.Dim(f"cols_{i}", min=1, max=64)}
                   for i in range(count))  # fmt: skip
    return export_module(
        MembersForExport(prompter.nets),
        example,
        path,
        BACKBONE,
        input_names=[f"image_{i}" for i in range(count)],
        output_names=[f"logits_{i}" for i in range(count)],
        check_inputs=check_inputs or [example, other],
        source={"model": "BackboneNet", "weights_sha256": weights_sha256},
        dynamic_shapes={"images": shapes},
        extra={
            "task": task,
            "members": prompter.members(),
            "flip": prompter.flip,
            "fallback": prompter.fallback,
            "labels": {str(k): v for k, v in prompter.labels.items()},
            "score_threshold": prompter.score_threshold,
            "pixel_threshold": prompter.pixel_threshold,
            "min_area_fraction": prompter.min_area_fraction,
            "refinement": {"settings": prompter.refinement},
            "propagation": {"settings": prompter.propagation},
        },
    )


def export_yolonas_prompter(
    prompter: YoloNasPrompter,
    path: str | Path,
    weights_sha256: str,
    check_inputs: Sequence[Inputs] | None = None,
) -> Exported:
    """A ``prompt.yolonas.YoloNasPrompter``'s network on a letterboxed (1, 3, S, S) image.

    The outputs are what ``prompt.yolonas.select_boxes`` consumes: decoded boxes (continuous
    XYXY in input pixels) and per-class sigmoid scores for every anchor, before NMS.
    """
    size = int(prompter.input_size)
    generator = torch.Generator().manual_seed(0)
    example = (torch.rand(1, 3, size, size, generator=generator),)
    return export_module(
        prompter.model,
        example,
        path,
        YOLONAS,
        input_names=["image"],
        output_names=["boxes", "scores"],
        check_inputs=check_inputs or [example],
        source={"model": "YOLO-NAS", "weights_sha256": weights_sha256},
        extra={
            "labels": {str(k): v for k, v in prompter.labels.items()},
            "input_size": size,
            "score_threshold": prompter.score_threshold,
            "iou_threshold": prompter.iou_threshold,
            "max_detections": prompter.max_detections,
            "propagation": {"settings": prompter.propagation},
        },
    )


def export_module(
    module: nn.Module,
    example: Inputs,
    path: str | Path,
    model: str,
    input_names: list[str],
    output_names: list[str],
    check_inputs: Sequence[Inputs],
    source: dict[str, Any],
    dynamic_shapes: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Exported:
    """Export ``module`` traced on ``example``, check it, write the ``.onnx`` and its card."""
    onnx_path = Path(path).with_suffix(".onnx")
    module = module.eval()
    data = _to_onnx(module, example, input_names, output_names, dynamic_shapes)
    session = make_session(data, onnx_path, threads=2)
    max_abs, cosine = check_parity(module, session, input_names, check_inputs, onnx_path)
    io.write_bytes(onnx_path, data)
    card = {
        "kind": KIND,
        "model": model,
        "card_version": ONNX_CARD_VERSION,
        "automedseg_version": automedseg.__version__,
        "weights_file": onnx_path.name,
        "sha256": file_sha256(onnx_path),
        "opset": OPSET,
        "inputs": [_describe(i) for i in session.get_inputs()],
        "outputs": [_describe(o) for o in session.get_outputs()],
        "source": source,
        "exporter": {"torch": torch.__version__, "dynamo": True},
        "parity": {
            "check_inputs": len(check_inputs),
            "max_abs_diff": max_abs,
            "min_cosine": cosine,
            "tolerance": {"max_relative_diff": MAX_RELATIVE_DIFF, "min_cosine": MIN_COSINE},
        },
        **(extra or {}),
    }
    card_path = io.write_json(card_path_for(onnx_path), card)
    return Exported(onnx_path, card_path, len(data) / 1e6, max_abs, cosine)


def _to_onnx(
    module: nn.Module,
    example: Inputs,
    input_names: list[str],
    output_names: list[str],
    dynamic_shapes: dict[str, Any] | None,
) -> bytes:
    import onnx

    with warnings.catch_warnings(), torch.inference_mode(False):
        warnings.simplefilter("ignore", (UserWarning, DeprecationWarning, FutureWarning))
        program = torch.onnx.export(
            module,
            example,
            input_names=input_names,
            output_names=output_names,
            opset_version=OPSET,
            dynamo=True,
            dynamic_shapes=dynamic_shapes,
            external_data=False,
            verbose=False,
        )
    proto = program.model_proto
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def check_parity(
    module: nn.Module,
    session: Any,
    input_names: list[str],
    check_inputs: Sequence[Inputs],
    path: Path,
) -> tuple[float, float]:
    """(max abs diff, min cosine) of ONNX Runtime against PyTorch; ``WeightsError`` when
    an output is outside the tolerance (see the module docstring)."""
    max_abs, min_cosine = 0.0, 1.0
    for inputs in check_inputs:
        with torch.inference_mode():
            expected = module(*inputs)
        expected = [expected] if isinstance(expected, torch.Tensor) else list(expected)
        feed = {name: t.detach().cpu().numpy() for name, t in zip(input_names, inputs, strict=True)}
        actual = session.run(None, feed)
        for name, want, got in zip(session.get_outputs(), expected, actual, strict=True):
            want = want.detach().cpu().numpy().astype(np.float64)
            got = np.asarray(got, np.float64)
            if want.shape != got.shape:
                raise WeightsError(
                    f"exported {name.name} has shape {got.shape}, PyTorch gives {want.shape}", path
                )
            diff = float(np.abs(got - want).max(initial=0.0))
            cosine = _cosine(got, want)
            scale = float(np.abs(want).max(initial=0.0))
            if diff > MAX_RELATIVE_DIFF * scale or cosine < MIN_COSINE:
                raise WeightsError(
                    f"exported {name.name} differs from PyTorch: max abs diff {diff:.3g} "
                    f"(output range {scale:.3g}), cosine {cosine:.6f}",
                    path,
                )
            max_abs, min_cosine = max(max_abs, diff), min(min_cosine, cosine)
    return max_abs, min_cosine


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norms == 0.0:
        return 1.0 if not a.any() and not b.any() else 0.0
    return float(np.dot(a.ravel(), b.ravel()) / norms)


def _describe(value: Any) -> dict[str, Any]:
    """Name, shape (an int per fixed axis, a name per dynamic one) and element type."""
    shape = [d if isinstance(d, int) else str(d) for d in value.shape]
    return {"name": value.name, "shape": shape, "dtype": value.type}
