"""Figures (matplotlib, PNG) and the self-contained HTML report."""

from .html import ReportContent, Section, write_report

__all__ = ["ReportContent", "Section", "write_report"]
