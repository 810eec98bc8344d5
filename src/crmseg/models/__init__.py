"""Customer-base models: BG/NBD, Pareto/NBD and Gamma-Gamma, plus RFM summaries.

The models import scipy (0.2-0.3 s), so this package loads them on first use: a run that
only scores a stored fit starts that import in the background (:func:`prefetch`) while its
scans run in the engine."""

from __future__ import annotations

import importlib
import threading
from typing import Any

__all__ = ["BetaGeo", "GammaGamma", "ParetoNBD", "compress", "prefetch", "rfm_summary"]

_HOMES = {
    "BetaGeo": "crmseg.models.betageo",
    "GammaGamma": "crmseg.models.gammagamma",
    "ParetoNBD": "crmseg.models.paretonbd",
    "compress": "crmseg.models.summary",
    "rfm_summary": "crmseg.models.summary",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)


def prefetch(*modules: str) -> None:
    """Start importing ``modules`` in a background thread. A fit or a scoring calls this
    before its queries: the engine releases the GIL while it works, so the import (seconds
    for scikit-learn) overlaps them instead of following them. A failed import is left for
    the caller's own import to report."""

    def load() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # reported by the caller's own import
                return

    threading.Thread(target=load, name="crmseg-prefetch", daemon=True).start()
