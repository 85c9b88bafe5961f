"""Clinical schema: encodings, missing values, every bad cell listed, extra columns."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from hematoma.errors import HematomaError, InputError, ManifestError
from hematoma.features.clinical import (
    BASELINE_VOLUME,
    CLINICAL_SCHEMA,
    CORE_VARIABLES,
    ClinicalWarning,
    clinical_problems,
    encode_clinical,
    load_clinical,
)

PAPER_VARIABLES = [
    "sex", "age", "sbp", "dbp", "adl_index", "hypertension", "heart_disease", "diabetes", "platelet_count",
    "neutrophil_count", "neutrophil_percent", "d_dimer", "fibrinogen", "prothrombin_time", BASELINE_VOLUME,
]


def full_row(**overrides) -> dict[str, str]:
    row = {
        "patient_id": "P1", "sex": "M", "age": "63", "sbp": "170", "dbp": "95", "adl_index": "60",
        "hypertension": "yes", "heart_disease": "no", "diabetes": "0", "platelet_count": "210",
        "neutrophil_count": "6.4", "neutrophil_percent": "74.5", "d_dimer": "0.8", "fibrinogen": "3.1",
        "prothrombin_time": "11.9", "onset_to_ct_hours": "3.5", "anticoagulation": "n", "inr": "1.02", "gcs": "14",
    }
    row.update(overrides)
    return row


def table(*rows: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame(list(rows), dtype=str)


def test_schema_has_the_papers_15_variables_then_optional_ones():
    assert list(CORE_VARIABLES) == PAPER_VARIABLES
    assert list(CLINICAL_SCHEMA)[:15] == PAPER_VARIABLES
    assert {"onset_to_ct_hours", "anticoagulation", "inr", "gcs"} <= set(CLINICAL_SCHEMA)
    assert CLINICAL_SCHEMA[BASELINE_VOLUME].computed
    for variable in CLINICAL_SCHEMA.values():
        assert variable.kind in ("binary", "continuous", "categorical")
        assert variable.description
        low, high = variable.plausible
        assert low < high


def test_encodings_sex_male_is_1_and_binary_words_case_insensitive():
    rows = [
        full_row(patient_id="a", sex="M", hypertension="YES", diabetes="True", heart_disease="1"),
        full_row(patient_id="b", sex="female", hypertension="n", diabetes="FALSE", heart_disease="0"),
        full_row(patient_id="c", sex="Male", hypertension="Y", diabetes="no", heart_disease="yes"),
        full_row(patient_id="d", sex="f", hypertension="1", diabetes="0", heart_disease="false"),
        full_row(patient_id="e", sex="1", hypertension="true", diabetes="1.0", heart_disease="0.0"),
        full_row(patient_id="f", sex="0", hypertension="No", diabetes="YES", heart_disease="N"),
    ]
    out = encode_clinical(table(*rows), source="clinical.csv")
    assert out["patient_id"].tolist() == list("abcdef")
    assert out["clin_sex"].tolist() == [1, 0, 1, 0, 1, 0]
    assert out["clin_hypertension"].tolist() == [1, 0, 1, 1, 1, 0]
    assert out["clin_diabetes"].tolist() == [1, 0, 0, 0, 1, 1]
    assert out["clin_heart_disease"].tolist() == [1, 0, 1, 0, 0, 0]
    assert out["clin_age"].tolist() == [63.0] * 6
    assert all(out[c].dtype == np.float64 for c in out.columns if c != "patient_id")


def test_numeric_and_boolean_cells_are_accepted_too():
    frame = pd.DataFrame({"patient_id": ["a", "b"], "sex": [1, 0], "diabetes": [True, False], "age": [70, 55.5]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ClinicalWarning)
        out = encode_clinical(frame)
    assert out["clin_sex"].tolist() == [1.0, 0.0]
    assert out["clin_diabetes"].tolist() == [1.0, 0.0]
    assert out["clin_age"].tolist() == [70.0, 55.5]


@pytest.mark.parametrize("blank", ["", "NA", "na", "N/A", "nan", " ", "null"])
def test_missing_values_stay_nan(blank):
    rows = [full_row(patient_id="a", sbp=blank, sex=blank, diabetes=blank), full_row(patient_id="b")]
    out = encode_clinical(table(*rows))
    assert math.isnan(out.loc[0, "clin_sbp"])
    assert math.isnan(out.loc[0, "clin_sex"])
    assert math.isnan(out.loc[0, "clin_diabetes"])
    assert out.loc[1, "clin_sbp"] == 170.0
    assert clinical_problems(table(*rows)) == []


def test_pandas_nan_from_a_loaded_manifest_stays_nan():
    frame = table(full_row(patient_id="a"), full_row(patient_id="b"))
    frame.loc[1, ["age", "gcs", "sex"]] = np.nan
    out = encode_clinical(frame)
    assert np.isnan(out.loc[1, ["clin_age", "clin_gcs", "clin_sex"]].to_numpy(float)).all()


def test_every_impossible_value_is_listed_at_once_with_rows_and_ids(tmp_path):
    rows = [
        full_row(patient_id="ok1"),
        full_row(patient_id="P002", sbp="2000", sex="X"),  # file row 3
        full_row(patient_id="ok2"),
        full_row(patient_id="P004", platelet_count="-5", age="sixty", diabetes="maybe"),  # row 5
        full_row(patient_id="P005", gcs="16", d_dimer="700", dbp="120", sbp="110"),  # row 6
        full_row(patient_id="P006", gcs="12.5", fibrinogen="inf"),  # row 7
    ]
    path = tmp_path / "clinical.csv"
    table(*rows).to_csv(path, index=False)
    with pytest.raises(ManifestError) as caught:
        load_clinical(path)
    error = caught.value
    assert isinstance(error, InputError) and isinstance(error, HematomaError)
    assert error.path == path and str(path) in str(error)
    problems = error.problems
    expected = [
        ("row 3 (patient_id 'P002')", "sbp '2000'"),
        ("row 3 (patient_id 'P002')", "sex 'X'"),
        ("row 5 (patient_id 'P004')", "platelet_count '-5'"),
        ("row 5 (patient_id 'P004')", "age 'sixty'"),
        ("row 5 (patient_id 'P004')", "diabetes 'maybe'"),
        ("row 6 (patient_id 'P005')", "gcs '16'"),
        ("row 6 (patient_id 'P005')", "d_dimer '700'"),
        ("row 6 (patient_id 'P005')", "dbp 120 is not below sbp 110"),
        ("row 7 (patient_id 'P006')", "gcs '12.5'"),
        ("row 7 (patient_id 'P006')", "fibrinogen 'inf'"),
    ]
    for row, what in expected:
        assert any(p.startswith(row) and what in p for p in problems), (row, what, problems)
    assert len(problems) == len(expected)
    assert clinical_problems(pd.read_csv(path, dtype=str, keep_default_na=False)) == problems
    assert "plausible range 40-300 mmHg" in next(p for p in problems if "sbp '2000'" in p)
    assert "not a number" in next(p for p in problems if "age 'sixty'" in p)


def test_unknown_columns_are_not_clinical_unless_declared():
    frame = table(full_row(patient_id="a", ward="3B", lactate="2.1"), full_row(patient_id="b", ward="4", lactate=""))
    frame["baseline_ct"] = ["a.nii.gz", "b.nii.gz"]
    out = encode_clinical(frame)
    assert "clin_ward" not in out.columns and "clin_lactate" not in out.columns
    assert not any("baseline_ct" in c for c in out.columns)

    out = encode_clinical(frame, extra_columns=["lactate"])
    assert out["clin_lactate"].iloc[0] == 2.1
    assert math.isnan(out["clin_lactate"].iloc[1])
    assert out.columns[-1] == "clin_lactate"  # extras after the schema variables

    problems = clinical_problems(frame, extra_columns=["ward"])  # declared but not numeric
    assert problems == ["row 2 (patient_id 'a'): ward '3B' is not a number"]
    assert clinical_problems(frame, extra_columns=["hba1c"]) == ["declared extra column 'hba1c' is not in the table"]


def test_typed_in_baseline_volume_is_an_error():
    frame = table(full_row(patient_id="a", baseline_volume_ml="25"))
    problems = clinical_problems(frame)
    assert len(problems) == 1 and "baseline_volume_ml" in problems[0] and "computed" in problems[0]
    with pytest.raises(ManifestError, match="baseline_volume_ml"):
        encode_clinical(frame, source="m.csv")


def test_absent_columns_are_allowed_with_a_warning():
    frame = pd.DataFrame({"patient_id": ["a", "b"], "age": ["70", "81"], "sbp": ["150", ""]})
    with pytest.warns(ClinicalWarning, match="sex.*dbp") as record:
        out = encode_clinical(frame, source="m.csv")
    message = str(record[0].message)
    assert "baseline_volume_ml" not in message  # computed, never expected in the table
    assert "gcs" not in message  # optional
    assert list(out.columns) == ["patient_id", "clin_age", "clin_sbp"]


def test_full_table_gives_no_warning_and_schema_order():
    with warnings.catch_warnings():
        warnings.simplefilter("error", ClinicalWarning)
        out = encode_clinical(table(full_row()))
    expected = ["patient_id"] + [f"clin_{n}" for n in CLINICAL_SCHEMA if n != BASELINE_VOLUME]
    assert list(out.columns) == expected


def test_missing_patient_id_column_and_unreadable_file(tmp_path):
    with pytest.raises(ManifestError, match="patient_id"):
        encode_clinical(pd.DataFrame({"age": ["50"]}), source="x.csv")
    with pytest.raises(InputError, match="no such file"):
        load_clinical(tmp_path / "absent.csv")
