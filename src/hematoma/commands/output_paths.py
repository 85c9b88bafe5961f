"""Output paths that must not land on a command's inputs or on each other.

``--overwrite`` lets a command replace its own earlier outputs, never the
user's inputs: a report written over the patient's CT (seen: `predict
--report CT --overwrite`) destroys the data the result came from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from ..errors import InputError
from ..storage import same_file


def refuse_clashes(outputs: Mapping[str, Path | None], inputs: Mapping[str, Path | None]) -> None:
    """InputError when an output names an input, or two outputs name one file (option names in the message)."""
    given_outputs = [(option, Path(path)) for option, path in outputs.items() if path is not None]
    given_inputs = [(option, Path(path)) for option, path in inputs.items() if path is not None]
    for option, path in given_outputs:
        for input_option, input_path in given_inputs:
            if same_file(path, input_path) or _inside(input_path, path):
                raise InputError(path, f"{option} is the input {input_option} itself; choose another file")
    for index, (option, path) in enumerate(given_outputs):
        for other_option, other in given_outputs[index + 1:]:
            if same_file(path, other):
                raise InputError(path, f"{option} and {other_option} name the same file; give each its own")


def refuse_suffix(option: str, path: Path | None, suffixes: tuple[str, ...]) -> None:
    """InputError unless ``path`` ends with one of ``suffixes`` (e.g. a PNG figure named .nii.gz)."""
    if path is not None and not Path(path).name.lower().endswith(suffixes):
        raise InputError(path, f"{option} must end with {' or '.join(suffixes)}")


def _inside(input_path: Path, output: Path) -> bool:
    # A DICOM series folder is an input too: an output file inside it would join the series.
    return input_path.is_dir() and output.resolve().is_relative_to(input_path.resolve())
