"""Read and write images: NIfTI, NRRD, MetaImage, DICOM series and files.

Everything returns a :class:`SimpleITK.Image` that keeps the scan's geometry
(spacing, origin, direction) and, for DICOM, its values in HU (GDCM applies
RescaleSlope/Intercept).  Every user-input problem is an :class:`InputError`
naming the file.  One idea per module: paths, ITK's captured output, header
checks, image files, DICOM series and their resampling, masks, and the
integrity checks run before ITK reads a file.
"""

from .arrays import array_to_image, as_3d, image_to_array
from .dicom_seg import SEG_SOP_CLASS_UID, is_dicom_seg, read_dicom_seg, write_dicom_seg
from .dicom_sr import write_volume_report
from .images import read_image, write_image
from .integrity import check_image_file_complete, dicom_pixel_data_problem
from .itk_capture import ImageWarning
from .masks import check_geometry, read_geometry, read_mask
from .paths import READ_SUFFIXES, WRITE_SUFFIXES

__all__ = [
    "READ_SUFFIXES",
    "SEG_SOP_CLASS_UID",
    "WRITE_SUFFIXES",
    "ImageWarning",
    "array_to_image",
    "as_3d",
    "check_geometry",
    "check_image_file_complete",
    "dicom_pixel_data_problem",
    "image_to_array",
    "is_dicom_seg",
    "read_dicom_seg",
    "read_geometry",
    "read_image",
    "read_mask",
    "write_dicom_seg",
    "write_image",
    "write_volume_report",
]
