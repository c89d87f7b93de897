"""Wiring prompter → segmenter → label map: one plane (``image.segment_plane``), a 2D image or
a volume/video along axis 0 (``image.segment_image``), slice-to-slice propagation
(``propagate``), and SAM2's memory seeded by a prompter (``sam2``; needs torch and sam2)."""

from automedseg.pipeline.image import segment_image, segment_plane

__all__ = ["segment_image", "segment_plane"]
