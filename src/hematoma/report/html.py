"""One self-contained HTML report: every figure embedded as a base64 PNG, so
the file can be mailed or archived alone and opens in any browser offline."""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import jinja2
import pandas as pd

from ..storage import write_text


@dataclass
class Section:
    """A section of its own after the tables: paragraphs, a list of facts, a table, a caption (all optional)."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    facts: dict = field(default_factory=dict)  # label -> text, or a list of lines
    table: pd.DataFrame | None = None
    caption: str = ""
    figures: dict[str, Path] = field(default_factory=dict)  # caption -> PNG file, shown in the section


@dataclass
class ReportContent:
    """What a report shows; sections keep their insertion order."""

    title: str
    summary: dict = field(default_factory=dict)  # headline figures, label -> text
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # caption -> table
    figures: dict[str, Path] = field(default_factory=dict)  # caption -> PNG file
    sections: list[Section] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)


def _embed(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _table_html(table: pd.DataFrame) -> str:
    return table.to_html(classes="table", border=0, na_rep="", float_format=lambda v: f"{v:.3g}", index=False)


def render_report(content: ReportContent) -> str:
    template_text = resources.files("hematoma.report").joinpath("templates/report.html").read_text(encoding="utf-8")
    environment = jinja2.Environment(autoescape=jinja2.select_autoescape(["html"]), undefined=jinja2.StrictUndefined)
    template = environment.from_string(template_text)
    return template.render(
        title=content.title,
        created=dt.datetime.now().isoformat(timespec="seconds"),
        summary=content.summary,
        tables={caption: _table_html(table) for caption, table in content.tables.items()},
        figures={caption: _embed(path) for caption, path in content.figures.items()},
        sections=[{"title": s.title, "paragraphs": s.paragraphs, "caption": s.caption,
                   "facts": {k: [v] if isinstance(v, str) else list(v) for k, v in s.facts.items()},
                   "table": None if s.table is None else _table_html(s.table),
                   "figures": {caption: _embed(path) for caption, path in s.figures.items()}} for s in content.sections],
        notes=content.notes,
        settings=content.settings,
        versions=content.versions,
    )


def write_report(content: ReportContent, path: str | Path) -> Path:
    """Write the report atomically to ``path`` (an .html file)."""
    return write_text(path, render_report(content))
