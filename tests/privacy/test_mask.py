"""One PII mask: ``--mask`` on profile and explain hides emails, phones and names, and only
them; the same function masks quality examples."""

from __future__ import annotations

import json
from datetime import datetime

from crmseg import Workspace
from crmseg.sources.pii import mask, mask_fields
from tests.conftest import MakeProject, run_cli

SEGMENTS = """\
segments:
  - name: demographic.example_mail
    description: Customers with an example.com address.
    owner: crm-team
    rule: email like '%@example.com' and country = 'DE'
"""


def test_mask_keeps_the_shape_and_only_personal_fields() -> None:
    assert mask("anna@example.com") == "a***@*******.***"
    assert mask("+49 176 1234") == "+** *** ****"
    assert mask(None) is None
    out = mask_fields({"email": "anna@example.com", "country": "DE", "first_name": "Anna"})
    assert out == {"email": "a***@*******.***", "country": "DE", "first_name": "A***"}
    assert mask_fields({"value": "x@y.z"}, ("value",)) == {"value": "x@*.*"}


def test_profile_and_explain_mask_personal_data(make_project: MakeProject) -> None:
    root = make_project(segments__extra_yml=SEGMENTS)
    with Workspace.open(root) as ws:
        ws.run(as_of=datetime(2024, 8, 1))
    plain = run_cli("profile", "1", "-p", str(root))
    masked = run_cli("profile", "1", "--mask", "-p", str(root))
    assert plain.returncode == masked.returncode == 0, masked.stderr
    assert "anna@example.com" in plain.stdout
    assert "anna@example.com" not in masked.stdout and "a***@*******.***" in masked.stdout
    data = json.loads(run_cli("profile", "1", "--mask", "-f", "json", "-p", str(root)).stdout)
    assert all("anna" not in json.dumps(r) for r in data["records"])
    assert data["segments"] and data["current"]  # the rest is unchanged
    args = ("explain", "demographic.example_mail", "1", "-p", str(root))
    plain, masked = run_cli(*args), run_cli(*args, "--mask")
    assert plain.returncode == masked.returncode == 0, masked.stderr
    assert "anna@example.com" in plain.stdout
    assert "anna@example.com" not in masked.stdout and "a***@*******.***" in masked.stdout
    assert "= DE" in masked.stdout or "DE" in masked.stdout  # not personal: shown
    assert masked.stdout.splitlines()[0] == plain.stdout.splitlines()[0]  # same verdict
