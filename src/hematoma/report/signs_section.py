"""The one-patient report's "NCCT signs" section: every sign found or not, the Barras grades, the BAT score.

Built from a prediction's ``sign_`` values and findings
(:func:`hematoma.features.signs.analyse_signs`) and the PNG of each sign found
(:mod:`.sign_figures`), which the section shows (``Section.figures``).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..evaluation.metrics import float_or_nan as _number
from ..features.signs import SIGNS, bat_score
from .html import Section
from .sign_figures import measurement_text, sign_name

TITLE = "NCCT signs"
ONSET_COLUMN = "clin_onset_to_ct_hours"
STANDARDS = ("Morotti A, Boulouis G, Dowlatshahi D, et al. Standards for detecting, interpreting, and reporting "
             "noncontrast computed tomographic markers of intracerebral hemorrhage expansion. Ann Neurol 2019;86:480-92.")
BAT_CITATION = ("Morotti A, Dowlatshahi D, Boulouis G, et al. Predicting intracerebral hemorrhage expansion with "
                "noncontrast computed tomography: the BAT score. Stroke 2018;49:1163-9.")
BARRAS_CITATION = ("Barras CD, Tress BM, Christensen S, et al. Density and shape as CT predictors of intracerebral "
                   "hemorrhage growth. Stroke 2009;40:1325-31.")
#: What each sign is, as hematoma.features.signs detects it, and where it was defined.
DEFINITIONS = {
    "hypodensity": "a region inside the clot at least 10 HU darker than it, not reaching its edge "
                   "(Boulouis et al., JAMA Neurol 2016)",
    "black_hole": "a region inside the clot at least 28 HU darker than it, not reaching its edge "
                  "(Li et al., Stroke 2016)",
    "blend": "a region at least 18 HU darker than the clot, reaching its edge, with a well-defined margin "
             "(Li et al., Stroke 2015)",
    "swirl": "a region hypo- or iso-attenuating to brain inside the clot (Selariu et al., BMC Neurol 2012)",
    "fluid_level": "a straight level with the dependent (posterior) part denser (Morotti et al., Ann Neurol 2019)",
    "island": "at least 3 small separate bleeds, or 4 counting bubbles budding from the clot "
              "(Li et al., Stroke 2017)",
    "satellite": "a bleed at most 10 mm across, 1-20 mm from the clot (Shimoda et al., AJNR 2017)",
}
BARRAS_SHAPE = {1: "round or ellipsoid, smooth", 2: "slightly irregular", 3: "irregular", 4: "lobulated",
                5: "very irregular, separated parts"}
BARRAS_DENSITY = {1: "homogeneous", 2: "one small hypodense area", 3: "a larger hypodense area, or two",
                  4: "three or more hypodense areas, or a large one", 5: "a fluid level"}
BAT_HIGH = 3  # BAT >= 3: high risk of expansion (Morotti et al., Stroke 2018)


def onset_hours(prediction) -> float:
    """The onset-to-CT time among the clinical values used (NaN when not given: the model's imputed value is not a time)."""
    given = getattr(prediction, "clinical_given", {}) or {}
    return _number(given.get(ONSET_COLUMN, math.nan))


def signs_table(values: dict, findings) -> pd.DataFrame:
    """One row per sign: found or not, its measurement and slice (1-based, as viewers number them), its definition."""
    shown = {f.sign: f for f in findings}
    rows = []
    for sign in SIGNS:
        flag = _number(values.get(f"sign_{sign}", math.nan))
        finding = shown.get(sign)
        if finding is not None:
            found, measurement, where = "found", measurement_text(finding).split(": ", 1)[-1], str(finding.slice_index + 1)
        elif flag >= 0.5:
            found, measurement, where = "found", "", ""
        else:
            found, measurement, where = ("not measured" if math.isnan(flag) else "not found"), "", ""
        rows.append({"sign": sign_name(sign), "found": found, "measurement": measurement, "axial slice": where,
                     "definition": DEFINITIONS.get(sign, "")})
    return pd.DataFrame(rows, columns=["sign", "found", "measurement", "axial slice", "definition"])


def _grade(value, meanings: dict) -> str:
    grade = _number(value)
    if math.isnan(grade):
        return "not measured"
    return f"{grade:.0f} of 5 ({meanings.get(int(grade), '')})"


def _points(n: int) -> str:
    return f"{n} point" + ("" if n == 1 else "s")


def bat_lines(values: dict, onset: float) -> list[str]:
    """The BAT score and its three parts; "needs the onset time" when it is not given."""
    blend, hypodensity = _number(values.get("sign_blend")), _number(values.get("sign_hypodensity"))
    score = bat_score(blend, hypodensity, None if math.isnan(onset) else onset)

    def part(name, flag, points):
        if math.isnan(flag):
            return f"{name}: not measured"
        return f"{name}: {'yes' if flag >= 0.5 else 'no'} ({points if flag >= 0.5 else 0} of {_points(points)})"

    if math.isnan(onset):
        time = "time from onset to CT < 2.5 h: not given (--set onset_to_ct_hours=...)"
    else:
        time = f"time from onset to CT < 2.5 h: {'yes' if onset < 2.5 else 'no'}, {onset:g} h ({2 if onset < 2.5 else 0} of 2 points)"
    if math.isnan(score):
        head = "needs the onset time" if math.isnan(onset) else "not computed (a sign was not measured)"
    else:
        head = f"{score:.0f} of 5 ({'high' if score >= BAT_HIGH else 'low'} risk: >= {BAT_HIGH} is high)"
    return [head, part("blend sign", blend, 1), part("any hypodensity", hypodensity, 2), time]


def signs_report(values: dict, findings, figures: dict[str, Path], onset: float) -> Section:
    """The section, with a captioned figure per sign found (``figures``: sign -> PNG of that finding)."""
    found = [f for f in findings if f.sign in figures]
    paragraphs = [
        ("Non-contrast CT markers of hematoma expansion, detected on this CT and the hematoma mask as defined by the "
         "standards of Morotti et al. (Ann Neurol 2019) and the original definitions cited below. "
         + ("Each sign found is shown on the axial slice where it is clearest: the hematoma outlined in red, the "
            "sign's region in cyan." if found else "No sign was found, so there is no figure.")),
    ]
    facts = {
        "Barras shape": _grade(values.get("sign_barras_shape"), BARRAS_SHAPE)
        + ("" if math.isnan(_number(values.get("sign_barras_shape_solidity")))
           else f"; solidity {_number(values.get('sign_barras_shape_solidity')):.2f}"),
        "Barras density": _grade(values.get("sign_barras_density"), BARRAS_DENSITY),
        "BAT score": bat_lines(values, onset),
        "references": [STANDARDS, BARRAS_CITATION, BAT_CITATION],
    }
    captions = {f"{measurement_text(f)} (axial slice {f.slice_index + 1})": Path(figures[f.sign]) for f in found}
    caption = ("Automatic detection on a research tool: a sign not found may still be present (and the reverse); "
               "look at the slices. Slices are numbered from 1 as viewers number them.")
    return Section(title=TITLE, paragraphs=paragraphs, facts=facts, table=signs_table(values, findings),
                   caption=caption, figures=captions)
