"""Everything a user can set or call is documented (datasette-style)."""

from __future__ import annotations

import re
from pathlib import Path

import typer.main

from crmseg.cli.main import app
from crmseg.config import (
    BackendConfig,
    Config,
    GoldenConfig,
    IdentityConfig,
    InputConfig,
    ModelsConfig,
    PrivacyConfig,
    QualityCheckConfig,
    QualityConfig,
    ScheduleConfig,
    SourceConfig,
    SplinkConfig,
    StateConfig,
    StreamConfig,
    StreamWebhook,
)
from crmseg.sources.model import TABLES

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_every_config_key_is_documented() -> None:
    text = (DOCS / "configuration.md").read_text()
    for model, prefix in (
        (Config, ""),
        (BackendConfig, "backend."),
        (StateConfig, "state."),
        (SourceConfig, "sources.<table>."),
        (QualityConfig, "quality."),
        (QualityCheckConfig, "quality.checks.<check>."),
        (IdentityConfig, "identity."),
        (GoldenConfig, "identity.golden."),
        (SplinkConfig, "identity.splink."),
        (PrivacyConfig, "privacy."),
        (ScheduleConfig, "schedule."),
        (StreamConfig, "stream."),
        (StreamWebhook, "stream.webhooks[]."),
        (InputConfig, "inputs.<name>."),
        (ModelsConfig, "models."),
    ):
        for name, field in model.model_fields.items():
            key = field.alias or name  # what users write (state.schema)
            if model is Config and key in ("backend", "state", "sources", "quality", "identity"):
                continue
            if (model, key) in ((IdentityConfig, "golden"), (IdentityConfig, "splink")):
                continue
            assert f"`{prefix}{key}`" in text, f"{prefix}{key} missing from configuration.md"


def test_every_canonical_column_is_documented() -> None:
    text = (DOCS / "data-model.md").read_text()
    for table in TABLES.values():
        section = text.split(f"## {table.name}\n", 1)[1].split("\n## ", 1)[0]
        for col in table.columns:
            assert f"| `{col.name}` | {col.dtype} |" in section, f"{table.name}.{col.name}"


def test_every_cli_command_and_option_is_documented() -> None:
    text = (DOCS / "cli.md").read_text()
    group = typer.main.get_command(app)
    commands = group.commands  # type: ignore[attr-defined]
    assert commands
    for name, command in commands.items():
        assert re.search(rf"^## `crmseg {name}\b", text, re.M), f"command {name}"
        for param in command.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("--"):
                    assert opt in text, f"{name} {opt}"
    for param in group.params:
        for opt in getattr(param, "opts", []):
            if opt.startswith("--") and opt != "--help":
                assert opt in text, opt


def test_every_builtin_trait_is_documented() -> None:
    from crmseg.traits.builtin import BUILTIN_TRAITS, FUNCTIONS, MODEL_TRAITS

    text = (DOCS / "traits.md").read_text()
    for name in [d.name for d in BUILTIN_TRAITS] + list(MODEL_TRAITS):
        assert f"`{name}`" in text, f"built-in trait {name} missing from traits.md"
    for fn in FUNCTIONS:
        assert f"`{fn}(" in text, f"built-in function {fn} missing from traits.md"
