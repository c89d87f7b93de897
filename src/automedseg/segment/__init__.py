"""Image + boxes → masks: LiteMedSAM (and later SAM2/MedSAM2)."""
