"""Permissions of written results (issue 15 follow-up): those of a plain open()/mkdir, not mkstemp's 0600.

Results and model folders were 0600/0700 whatever the umask (tempfile makes
private files and the rename keeps their mode): colleagues sharing a research
folder could not read them.  The umask is read once per process, so each case
runs in a fresh interpreter started with the umask under test.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import textwrap

import pytest

_WRITE = textwrap.dedent("""
    import sys
    from pathlib import Path
    import numpy as np
    import pandas as pd
    from hematoma.model import build_model, fit_model
    from hematoma.model_bundle import save_model
    from hematoma.storage import atomic_path, write_json

    out = Path(sys.argv[1])
    write_json(out / "results" / "record.json", {"a": 1})
    with atomic_path(out / "results" / "table.csv") as tmp:
        tmp.write_text("x\\n1\\n")
    rng = np.random.default_rng(0)
    y = pd.Series(np.arange(40) % 2)
    X = pd.DataFrame({"rad_a": rng.normal(size=40) + y, "rad_b": rng.normal(size=40)})
    model = fit_model(build_model(classifier="svm", groups=("rad",), k_grid=(2,), cv=2, grid="small"), X, y)
    save_model(model, out / "model", feature_columns=["rad_a", "rad_b"])
    save_model(model, out / "model", feature_columns=["rad_a", "rad_b"], overwrite=True)  # replaced in place
""")


def _modes(tmp_path, umask: int) -> dict[str, int]:
    out = tmp_path / "out"
    subprocess.run([sys.executable, "-c", _WRITE, str(out)], check=True, umask=umask, timeout=120)
    return {str(p.relative_to(out)): stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*")}


@pytest.mark.parametrize(("umask", "file_mode", "folder_mode"), [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_results_and_bundles_get_the_modes_of_a_plain_open_and_mkdir(tmp_path, umask, file_mode, folder_mode):
    modes = _modes(tmp_path, umask)
    assert modes["results/record.json"] == file_mode
    assert modes["results/table.csv"] == file_mode
    assert modes["model"] == folder_mode
    assert modes["model/bundle.json"] == file_mode and modes["model/model.skops"] == file_mode
    assert json.loads((tmp_path / "out" / "model" / "bundle.json").read_text())["feature_columns"] == ["rad_a", "rad_b"]
