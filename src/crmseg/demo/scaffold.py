"""Creating projects: an empty skeleton, or the demo shop (templates + generated data)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from importlib import resources
from pathlib import Path

from crmseg.errors import ConfigError, Location

# The demo data ends here; running the demo at this instant makes its numbers reproducible.
DEMO_AS_OF = datetime(2026, 11, 1)

_FOLDERS = ("segments", "traits", "campaigns", "tests", "data")

_SKELETON = """\
# crmseg project file: see docs/configuration.md
name: {name}
backend: {{kind: duckdb, path: .crmseg/warehouse.duckdb}}
timezone: UTC
currency: EUR
sources:
  customers: {{path: data/customers.csv}}
  # orders: {{path: data/orders.csv, columns: {{ordered_at: created, amount: total}}}}
"""

_SKELETON_SEGMENT = """\
segments:
  - name: demographic.germany
    description: Customers in Germany.
    owner: crm-team
    purpose: an example; replace with your own
    refresh: daily
    rule: country = 'DE'
"""

_SKELETON_CUSTOMERS = "customer_id,email,country,signup_at\n"


def _template_files() -> list[tuple[str, str]]:
    root = resources.files("crmseg.demo").joinpath("project")
    out: list[tuple[str, str]] = []

    def walk(node: object, prefix: str) -> None:
        for child in node.iterdir():  # type: ignore[attr-defined]
            name = f"{prefix}{child.name}"
            if child.is_dir():
                walk(child, name + "/")
            elif not child.name.startswith(("_", ".")) and not name.endswith(".pyc"):
                out.append((name, child.read_text(encoding="utf-8")))

    walk(root, "")
    return sorted(out)


def init_project(
    directory: Path,
    *,
    demo: bool = False,
    customers: int = 5000,
    seed: int = 42,
    force: bool = False,
    progress: Callable[[str, float], None] | None = None,
) -> list[Path]:
    """Write a project into ``directory``; refuse to touch an existing one unless ``force``."""
    directory = Path(directory)
    project_file = directory / "crmseg.yml"
    if project_file.exists() and not force:
        raise ConfigError(
            "a project already exists here (use --force to overwrite its project files)",
            Location(str(project_file)),
        )
    if directory.exists() and not directory.is_dir():
        raise ConfigError("not a folder", Location(str(directory)))
    directory.mkdir(parents=True, exist_ok=True)
    for folder in _FOLDERS:
        (directory / folder).mkdir(exist_ok=True)
    written: list[Path] = []
    if not demo:
        files = [
            ("crmseg.yml", _SKELETON.format(name=directory.resolve().name or "crm")),
            ("segments/examples.yml", _SKELETON_SEGMENT),
        ]
        if not (directory / "data" / "customers.csv").exists():
            files.append(("data/customers.csv", _SKELETON_CUSTOMERS))
    else:
        files = _template_files()
    for rel, text in files:
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    if demo:
        from crmseg.demo.generator import write_data
        from crmseg.demo.history import record_past_campaigns

        counts = write_data(
            directory, n_customers=customers, seed=seed, as_of=DEMO_AS_OF, progress=progress
        )
        written.extend(directory / "data" / f"{name}.parquet" for name in counts)
        record_past_campaigns(directory)  # their send log, as if crmseg had sent them
    return written
