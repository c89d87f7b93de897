"""Data sets with manual masks: their layouts and cases (``datasets``), and the 2D planes and
reproducible train/validation splits that training, evaluation and calibration read
(``planes``)."""
