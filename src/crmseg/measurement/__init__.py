"""Measurement: outcomes by segment over time, holdout lift with intervals, power, cohorts,
transitions, stability, the review report and the HTML report (DESIGN.md section 7).

The rightmost stage: it reads the state database (runs, memberships, activation's send log)
and the identity-resolved canonical tables, and writes only its own tables.
"""

from crmseg.measurement.lift import Lift, conversion_lift, mean_lift, newcombe, welch, wilson
from crmseg.measurement.power import PowerResult, mde_proportion, power_report, size_for_proportion

__all__ = [
    "Lift",
    "PowerResult",
    "conversion_lift",
    "mde_proportion",
    "mean_lift",
    "newcombe",
    "power_report",
    "size_for_proportion",
    "welch",
    "wilson",
]
