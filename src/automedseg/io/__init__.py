"""Reading and writing files: the only place that knows about PNG, DICOM, NIfTI and video.

Readers return ``types.Image`` (array + geometry, see ``types`` for the conventions) and
raise ``errors.InputError`` naming the file for anything they cannot read. Writers are
atomic: a failed write leaves no partial file. nibabel, pydicom, SimpleITK, highdicom and
PyAV are imported only when a file needs them.
"""

from automedseg.io.coco import coco_annotations, write_coco
from automedseg.io.dicom_seg import write_dicom_seg
from automedseg.io.discover import Source, content_sha256, find_sources, read_source
from automedseg.io.folders import (
    read_json_or_none,
    remove_folder,
    remove_temp_folders,
    replace_folder,
    temp_folder,
)
from automedseg.io.frames import read_frames, write_frame_masks
from automedseg.io.nifti import write_nifti
from automedseg.io.read import read_image, read_label_map
from automedseg.io.rtstruct import write_rtstruct
from automedseg.io.tables import CsvLog, write_csv
from automedseg.io.uploads import store_upload
from automedseg.io.video import read_video, write_overlay_video
from automedseg.io.writers import (
    read_arrays,
    write_animated_gif,
    write_arrays,
    write_bytes,
    write_figure,
    write_json,
    write_label_png,
    write_overlay_png,
    write_text,
)

__all__ = [
    "CsvLog",
    "Source",
    "coco_annotations",
    "content_sha256",
    "find_sources",
    "read_source",
    "read_arrays",
    "read_json_or_none",
    "write_arrays",
    "store_upload",
    "remove_folder",
    "remove_temp_folders",
    "replace_folder",
    "temp_folder",
    "write_coco",
    "write_csv",
    "write_rtstruct",
    "read_frames",
    "read_image",
    "read_label_map",
    "read_video",
    "write_animated_gif",
    "write_bytes",
    "write_dicom_seg",
    "write_figure",
    "write_frame_masks",
    "write_json",
    "write_label_png",
    "write_nifti",
    "write_overlay_png",
    "write_overlay_video",
    "write_text",
]
