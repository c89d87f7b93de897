"""Image + boxes → masks: LiteMedSAM (``litemedsam``, fine-tuned parts in ``delta`` and
``adapter``) and SAM2.1 / MedSAM2 (``medsam2``). The choices below are torch-free, for the CLI."""

TUNING_METHODS = ("decoder", "adapter")
"""What ``train segmenter`` can tune: ``decoder`` = the mask decoder (image and prompt encoders
frozen); ``adapter`` = bottleneck adapters added to the image encoder's transformer blocks
(everything else frozen; see ``segment.adapter``)."""
SAM2_IMAGE_SIZES = (512, 1024)
"""SAM2 input sizes: 512 is MedSAM2's, 1024 SAM2.1's."""
