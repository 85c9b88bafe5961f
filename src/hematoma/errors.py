"""Errors a user can act on.

Every problem with a user's input is raised as :class:`InputError`, which
carries the offending file and a one-line description.  The CLI prints it as a
single line (no traceback unless ``--debug``) and exits non-zero.
"""

from __future__ import annotations

from pathlib import Path


class HematomaError(Exception):
    """Base class of errors that the CLI reports as one line."""

    exit_code = 2


class InputError(HematomaError):
    """A user's file or value is missing, unreadable or invalid.

    Parameters
    ----------
    path:
        The file the problem is in (or ``None`` when no file is involved).
    problem:
        What is wrong, in one line.
    """

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)


class ManifestError(InputError):
    """A manifest with one or more problems; all of them are listed."""

    def __init__(self, path: str | Path, problems: list[str]):
        self.problems = list(problems)
        n = len(self.problems)
        summary = f"{n} problem{'s' if n != 1 else ''}: " + "; ".join(self.problems)
        super().__init__(path, summary)
