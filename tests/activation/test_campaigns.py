"""Campaign files: the schema, located errors, segment expressions, the demo catalog."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from crmseg.activation.campaigns import (
    evaluate_segment_expr,
    load_campaigns,
    parse_segment_expr,
    segment_names,
)
from crmseg.errors import ConfigError
from crmseg.segments.catalog import load_segments


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "campaigns").mkdir(exist_ok=True)
    (tmp_path / "campaigns" / "c.yml").write_text(text)
    return tmp_path


def test_segment_expressions() -> None:
    members = {"a": {"1", "2", "3"}, "b": {"2", "3", "4"}, "c": {"3"}}
    universe = {"1", "2", "3", "4", "5"}
    assert evaluate_segment_expr("a and b", members, universe) == {"2", "3"}
    assert evaluate_segment_expr("a or b and not c", members, universe) == {"1", "2", "3", "4"}
    assert evaluate_segment_expr("(a or b) and not c", members, universe) == {"1", "2", "4"}
    assert evaluate_segment_expr("not a", members, universe) == {"4", "5"}
    assert segment_names("x.y and not (z.w or x.y)") == ["x.y", "z.w"]
    for bad in ("a and", "a b", "(a", "and a"):
        with pytest.raises(ValueError):
            parse_segment_expr(bad)


@pytest.mark.parametrize(
    ("body", "message", "line"),
    [
        ("    channel: fax\n", "Input should be", 4),
        ("    channel: email\n    holdout: 1.5\n", "less than 1", 5),
        ("    channel: email\n    cap: 3\n", "unknown key", 5),
        ("    channel: email\n    frequency_cap: [{max: 3, per: 7 days}]\n", "duration", 5),
    ],
)
def test_errors_are_located(tmp_path: Path, body: str, message: str, line: int) -> None:
    text = f"campaigns:\n  - name: promo\n    segment: value.vip\n{body}"
    with pytest.raises(ConfigError, match=message) as err:
        load_campaigns(_write(tmp_path, text), ["value.vip"])
    assert err.value.location.file == "campaigns/c.yml"
    assert err.value.location.line == line


def test_unknown_segment_names_a_close_match(tmp_path: Path) -> None:
    text = "campaigns:\n  - name: promo\n    segment: value.vipp\n    channel: email\n"
    with pytest.raises(ConfigError, match=r"did you mean 'value\.vip'") as err:
        load_campaigns(_write(tmp_path, text), ["value.vip"])
    assert err.value.location.line == 3


def test_the_demo_campaigns_load_against_the_demo_segments() -> None:
    root = Path(str(resources.files("crmseg.demo").joinpath("project")))
    segments = [s.name for s in load_segments(root)]
    campaigns = {c.name: c for c in load_campaigns(root, segments)}
    assert {
        "skincare_replenishment_email",
        "trial_onboarding_nudge",
        "churn_save_pause_plan",
        "vip_early_access",
    } <= set(campaigns)
    churn = campaigns["churn_save_pause_plan"]
    assert "pause_plan" in [s.name for s in churn.spec.splits]
    assert churn.spec.priority > campaigns["vip_early_access"].spec.priority


@pytest.mark.parametrize(
    ("dest", "message"),
    [
        ("{type: file, path: 'out/{foo}.csv'}", r"unknown placeholder \{foo\}"),
        ("{type: file, path: 'out/{campaign.__class__}.csv'}", "unknown placeholder"),
        ("{type: file, path: 'out/{campaign!r}.csv'}", "unknown placeholder"),
        ("{type: file, path: 'out/{as_of:>99}.csv'}", "unknown placeholder"),
        ("{type: file, path: 'out/{campaign.csv'}", "literal braces"),
        ("{type: file, path: ''}", "empty"),
        ("{type: file, path: '../x/{campaign}.csv'}", "outside the project folder"),
        ("{type: file, path: '/tmp/{campaign}.csv'}", "outside the project folder"),
        ("{type: file, path: 'a/../../x.csv'}", "outside the project folder"),
        ("{type: ad_list, platform: meta, path: '../{campaign}.csv'}", "outside the project"),
        ("{type: webhook, url: 'http://x', dead_letter: '/var/{campaign}'}", "outside the proj"),
        ("{type: webhook, url: 'http://x', dead_letter: 'd/{x}'}", "unknown placeholder"),
    ],
)
def test_output_paths_are_checked_where_they_are_written(
    tmp_path: Path, dest: str, message: str
) -> None:
    text = (
        "campaigns:\n  - name: promo\n    segment: value.vip\n    channel: email\n"
        f"    destination: {dest}\n"
    )
    with pytest.raises(ConfigError, match=message) as err:
        load_campaigns(_write(tmp_path, text), ["value.vip"])
    assert err.value.location.file == "campaigns/c.yml"
    assert err.value.location.line == 5


def test_paths_outside_the_project_when_allowed(tmp_path: Path) -> None:
    text = (
        "campaigns:\n  - name: promo\n    segment: value.vip\n    channel: email\n"
        "    destination: {type: file, path: '../out/{campaign}-{{x}}.csv', "
        "allow_outside_project: true}\n"
    )
    (c,) = load_campaigns(_write(tmp_path, text), ["value.vip"])
    assert c.spec.destination[0].path == "../out/{campaign}-{{x}}.csv"
