"""Shared test settings: no network, headless plotting, few threads."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HEMATOMA_OFFLINE", "1")  # code that could fetch weights must not try

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The real public data of ../shared/data, or a skip saying it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (../shared is absent in a user's clone)")
    return SHARED_DATA


# --------------------------------------------------------------------------- the pipeline's shared run
# One small cohort and one `run` without CNN features, generated once per session and shared by
# test_pipeline.py and test_predict.py.
PIPELINE_PATIENTS = 30
PIPELINE_SEED = 1  # a cohort whose train part has patients of both classes (checked in test_pipeline.py)
PIPELINE_QUICK = {"classifier": "logistic", "grid": "small", "inner_repeats": 1}  # bookkeeping is tested, not skill


@pytest.fixture(scope="session")
def synthetic_cohort(tmp_path_factory) -> Path:
    from hematoma.synthetic import generate_cohort

    folder = tmp_path_factory.getbasetemp() / "pipeline-cohort"
    generate_cohort(folder, PIPELINE_PATIENTS, seed=PIPELINE_SEED, size="small", workers=2, progress=False)
    return folder / "manifest.csv"


@pytest.fixture(scope="session")
def synthetic_run(synthetic_cohort, tmp_path_factory):
    """`run` with radiomics and clinical features only (no CNN): (out folder, result)."""
    from hematoma.pipeline import RunSettings, run_protocol

    out = tmp_path_factory.getbasetemp() / "pipeline-run"
    settings = RunSettings(workers=1, groups=("rad", "clin"), seed=PIPELINE_SEED, **PIPELINE_QUICK)
    return out, run_protocol(synthetic_cohort, out, settings, progress=False)


# --- a small synthetic DICOM CT series (tests/test_dicom_seg.py, tests/test_dicom_sr.py) ----------------------


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """A synthetic head CT written as a DICOM series; its CT as read back, and the truth mask on that grid."""
    import numpy as np
    import SimpleITK as sitk
    from test_dicom_seg import _positions
    from test_io import write_ct_series

    from hematoma.io import read_image
    from hematoma.io.arrays import array_to_image
    from hematoma.synthetic import make_head_ct

    folder = tmp_path_factory.mktemp("series") / "ct"
    ct, truth = make_head_ct(size="small")
    hu = np.clip(sitk.GetArrayFromImage(ct), -1024, 3071)
    write_ct_series(folder, hu, _positions(ct), pixel_spacing=ct.GetSpacing()[1::-1], thickness=ct.GetSpacing()[2])
    read = read_image(folder)
    return folder, read, array_to_image(sitk.GetArrayFromImage(truth), read)


@pytest.fixture(scope="module")
def seg_file(series, tmp_path_factory):
    """The truth mask of ``series`` as a DICOM SEG."""
    from hematoma.io import write_dicom_seg

    folder, _, truth = series
    return write_dicom_seg(truth, folder, tmp_path_factory.mktemp("out") / "truth.dcm")
