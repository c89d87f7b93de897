"""Image + boxes → masks: LiteMedSAM (``litemedsam``) and SAM2.1 / MedSAM2 (``medsam2``)."""
