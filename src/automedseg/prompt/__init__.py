"""Image → boxes: oracle boxes from a ground-truth mask (and later trained detectors)."""
