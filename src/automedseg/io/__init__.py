"""Reading and writing files: the only place that knows about PNG, DICOM and NIfTI.

Readers return ``types.Image`` (array + geometry, see ``types`` for the conventions) and
raise ``errors.InputError`` naming the file for anything they cannot read. Writers are
atomic: a failed write leaves no partial file. nibabel, pydicom and SimpleITK are imported
only when a file needs them.
"""

from automedseg.io.nifti import write_nifti
from automedseg.io.read import read_image, read_label_map
from automedseg.io.writers import (
    write_figure,
    write_json,
    write_label_png,
    write_overlay_png,
    write_text,
)

__all__ = [
    "read_image",
    "read_label_map",
    "write_figure",
    "write_json",
    "write_label_png",
    "write_nifti",
    "write_overlay_png",
    "write_text",
]
