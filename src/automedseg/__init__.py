"""automedseg: automatic medical image segmentation with SAM-family models on a CPU.

Importing the package is cheap; torch and the I/O libraries load where they are used.
"""

__version__ = "0.1.0"
