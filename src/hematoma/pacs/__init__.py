"""A PACS over DICOMweb: fetch CT studies into a cohort folder and manifest, store SEG and SR results back."""

from .connection import PacsError, PacsServer
from .pull import pull, read_study_list, rows_for_studies
from .push import push_files

__all__ = ["PacsError", "PacsServer", "pull", "push_files", "read_study_list", "rows_for_studies"]
