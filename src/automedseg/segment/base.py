"""What every box-prompted segmenter offers: encode a plane once, answer many boxes."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class BoxSegmenter(Protocol):
    """Encodes one 2D plane in [0, 1] ((H, W) or (H, W, 3)) with ``set_image``, then turns
    boxes (XYXY inclusive pixels of that plane, ``(N, 4)``) into ``(N, H, W)`` boolean masks.

    LiteMedSAM's predictors (PyTorch and ONNX Runtime) also offer ``embedding`` (the current
    plane's image embedding, for prompters that read it) and ``encoded()`` / ``use(state)``
    (hand back and restore an encoded plane, so propagation never encodes a plane twice).
    """

    def set_image(self, image: np.ndarray) -> None: ...

    def predict(self, boxes_xyxy: np.ndarray) -> np.ndarray: ...
