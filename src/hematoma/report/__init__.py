"""Figures (matplotlib, PNG) and the self-contained HTML report."""

from .html import ReportContent, write_report

__all__ = ["ReportContent", "write_report"]
