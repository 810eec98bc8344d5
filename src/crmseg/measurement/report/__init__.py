"""The self-contained HTML report (plotly, its JavaScript inlined: opens offline)."""

from crmseg.measurement.report.builder import build_report

__all__ = ["build_report"]
