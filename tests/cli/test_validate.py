"""`crmseg validate` catches what run or activate would reject, each as one located line."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..conftest import CONFIG, MakeProject, run_cli

PROMO = "campaigns:\n  - name: promo\n    segment: value.buyers\n    channel: email\n"


def _errors(root: Path) -> list[str]:
    out = run_cli("validate", "-p", str(root))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stderr and "internal error" not in out.stderr
    return [line for line in out.stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (  # fails at activate today: the campaign's own rule
            {"campaigns__promo_yml": PROMO + "    suppress: {rules: {recent: 'ltv >'}}\n"},
            "campaigns/promo.yml:5:",
        ),
        (
            {"campaigns__promo_yml": PROMO + "    splits: [{name: a, weight: .inf}]\n"},
            "campaigns/promo.yml:5:",
        ),
        (
            {
                "campaigns__promo_yml": PROMO
                + "    send_window: {start: 2025-02-01, end: 2025-01-01}\n"
            },
            "must be before end",
        ),
        (
            {"segments__more_yml": "segments:\n  - name: vip.big\n    rule: ltv > 1\n"},
            "segments/more.yml:2: error: vip.big: unknown layer 'vip'",
        ),
        (
            {"segments__more_yml": "segments:\n  - name: ''\n    rule: ltv > 1\n"},
            "segments/more.yml:2:11",
        ),
        (
            {"segments__more_yml": "segments:\n  - name: value.a\n    name: value.b\n"},
            "segments/more.yml:3:5: duplicate key 'name'",
        ),
        (
            {"crmseg_yml": CONFIG.replace("data/customers.csv", "data/nope.csv")},
            "data/nope.csv: file not found (set at crmseg.yml:5)",
        ),
    ],
)
def test_validate_rejects_with_a_location(
    make_project: MakeProject, files: dict[str, str], expected: str
) -> None:
    errors = _errors(make_project(**files))
    assert any(expected in line for line in errors), errors


def test_a_huge_cell_names_its_line_and_the_limit(make_project: MakeProject) -> None:
    root = make_project()
    rows = (root / "data" / "customers.csv").read_text().splitlines()
    rows[2] += "é" * 5_000_000  # a 10 MB cell on line 3
    (root / "data" / "customers.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (line,) = _errors(root)
    assert "customers.csv:3: the line is longer than 8 MiB" in line
    assert len(line) < 400


def test_a_model_that_cannot_train_names_the_segment_that_needs_it(
    make_project: MakeProject,
) -> None:
    seg = (
        "segments:\n  - name: risk.churny\n    description: x\n    owner: y\n"
        "    rule: churn.risk > 0.5\n"
    )
    root = make_project(segments__core_yml=seg)
    out = run_cli("run", "-p", str(root), "--as-of", "2024-12-31")
    assert out.returncode == 1
    (line,) = [x for x in out.stderr.splitlines() if x.startswith("error:")]
    assert "churn:" in line and "needed by risk.churny (segments/core.yml:5)" in line
