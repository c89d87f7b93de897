"""LiteMedSAM's model space, without torch: the 256×256 padded input and its 64×64 embedding.

An (H, W) image is resized so that its longest side is ``IMAGE_SIZE`` and padded bottom/right
to ``IMAGE_SIZE``×``IMAGE_SIZE``; a pixel coordinate of the original image times
``IMAGE_SIZE / max(H, W)`` is the same point in model space. Shared by the PyTorch model
(``segment.litemedsam``), the head prompter and the ONNX Runtime predictor (``deploy``).
"""

from __future__ import annotations

IMAGE_SIZE = 256
EMBEDDING_SIZE = 64
EMBEDDING_CHANNELS = 256


def resized_shape(original_hw: tuple[int, int], size: int = IMAGE_SIZE) -> tuple[int, int]:
    """(h, w) of an image resized so that its longest side is ``size`` (before padding)."""
    h, w = original_hw
    scale = size / max(h, w)
    return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))
