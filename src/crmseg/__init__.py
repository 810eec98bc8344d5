"""crmseg: CRM segmentation as code."""

from __future__ import annotations

from crmseg.errors import CrmsegError

__version__ = "0.1.0"
__all__ = ["CrmsegError", "Workspace", "__version__"]


def __getattr__(name: str) -> object:
    # The facade pulls in Ibis and DuckDB; load it only when asked for.
    if name == "Workspace":
        from crmseg.workspace import Workspace

        return Workspace
    raise AttributeError(name)
