"""LiteMedSAM's preprocessing and postprocessing in numpy/scipy, without torch.

The same contract as ``segment.litemedsam.preprocess`` / ``postprocess`` (which use
``torch.nn.functional.interpolate``), for the ONNX Runtime predictor:

* ``preprocess``: an image in [0, 1], (H, W) or (H, W, C), is resized so that its longest side
  is 256 with the antialiased bilinear filter of ``interpolate(..., antialias=True)``
  (a triangle filter widened by the downscaling factor, as in Pillow), min-max normalised
  and padded bottom/right to a (1, C, 256, 256) float32 array (gray → 3 channels);
* ``postprocess``: (N, 1, 256, 256) logits are cropped to the resized region, upsampled
  bilinearly (``align_corners=False``, no antialiasing) to (H, W) and thresholded at 0.

The resampling itself is ``automedseg.resample``.
"""

from __future__ import annotations

import numpy as np

from automedseg.resample import resize_antialiased, resize_bilinear
from automedseg.segment.model_space import IMAGE_SIZE, resized_shape


def preprocess(image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """(1, 3, 256, 256) float32 model input and the (h, w) of the resized image inside it."""
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 2:
        array = array[..., None]
    new_h, new_w = resized_shape(array.shape[:2])
    resized = resize_antialiased(array, (new_h, new_w))
    lo, hi = resized.min(), resized.max()
    resized = (resized - lo) / max(hi - lo, np.float32(1e-8))
    channels = 3 if resized.shape[2] == 1 else resized.shape[2]
    batch = np.zeros((1, channels, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    batch[0, :, :new_h, :new_w] = resized.transpose(2, 0, 1)  # 1 channel broadcasts to 3
    return batch, (new_h, new_w)


def postprocess(
    logits: np.ndarray, resized: tuple[int, int], original: tuple[int, int]
) -> np.ndarray:
    """(N, 1, 256, 256) logits → (N, H, W) boolean masks of the original image."""
    cropped = np.asarray(logits, np.float32)[:, 0, : resized[0], : resized[1]]
    return resize_bilinear(cropped, original) > 0
