"""crmseg serve as a user runs it: a real uvicorn process on a free loopback port, over a small
project on disk, asked with real HTTP requests. Every route is checked for every role, and
every error for its one shape."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from crmseg.server.keys import KeyStore
from crmseg.workspace import Workspace

from ..conftest import MakeProject, run_cli

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


@dataclass
class Api:
    base: str
    keys: dict[str, str]  # role -> key text
    root: Path

    def call(
        self, method: str, path: str, role: str | None = None, key: str | None = None
    ) -> tuple[int, Any, str]:
        """(status, JSON body or None, content type)."""
        headers = {}
        text = key or (self.keys[role] if role else None)
        if text:
            headers["Authorization"] = f"Bearer {text}"
        req = urllib.request.Request(self.base + path, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                body, status, kind = resp.read(), resp.status, resp.headers["content-type"]
        except urllib.error.HTTPError as exc:
            body, status, kind = exc.read(), exc.code, exc.headers["content-type"]
        if kind.startswith("application/json"):
            return status, json.loads(body), kind
        return status, body.decode(), kind


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    from ..conftest import CONFIG, CUSTOMERS_CSV, ORDERS_CSV, SEGMENTS

    root = tmp_path_factory.mktemp("served") / "shop"
    for rel, text in {
        "crmseg.yml": CONFIG,
        "data/customers.csv": CUSTOMERS_CSV,
        "data/orders.csv": ORDERS_CSV,
        "segments/core.yml": SEGMENTS,
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    with Workspace.open(root) as ws:
        ws.run(as_of=datetime(2024, 8, 1))
        store = KeyStore(ws.state)
        keys = {
            role: store.create(role, f"test {role}")[1] for role in ("viewer", "editor", "admin")
        }
    port = _free_port()
    env = {**os.environ, "NO_COLOR": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "crmseg", "serve", "-p", str(root), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(base + "/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    _, err = proc.communicate(timeout=5)
                    pytest.fail(f"server did not start: {err.decode()[-2000:]}")
                time.sleep(0.2)
        yield Api(base, keys, root)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


# Every route (as the server's own OpenAPI lists it) and the least role it needs; a route
# missing here fails the test, so a new route cannot go unchecked.
ROLES = {
    ("GET", "/health"): None,
    ("GET", "/segments"): "viewer",
    ("GET", "/segments/{name}"): "viewer",
    ("GET", "/segments/{name}/preview"): "viewer",
    ("GET", "/segments/{name}/members"): "viewer",
    ("GET", "/segments/{name}/history"): "viewer",
    ("GET", "/segments/{name}/explain/{customer_id}"): "viewer",
    ("GET", "/customers/{customer_id}"): "viewer",
    ("GET", "/runs"): "viewer",
    ("POST", "/runs"): "editor",
    ("GET", "/keys"): "admin",
    ("POST", "/keys"): "admin",
    ("DELETE", "/keys/{key_id}"): "admin",
}
ORDER = (None, "viewer", "editor", "admin")


def _concrete(api: Api, method: str, path: str) -> str:
    out = path.replace("{name}", "value.buyers").replace("{customer_id}", "1")
    if "{key_id}" in out:
        _, made, _ = api.call("POST", "/keys?role=viewer&name=throwaway", "admin")
        out = out.replace("{key_id}", made["key_id"])
    if (method, path) == ("POST", "/keys"):
        out += "?role=viewer"
    if (method, path) == ("POST", "/runs"):
        out += "?as_of=2024-08-02T00:00:00"
    return out


def _is_error(body: Any) -> bool:
    return (
        isinstance(body, dict)
        and set(body) == {"error"}
        and set(body["error"]) == {"code", "message", "location"}
        and isinstance(body["error"]["message"], str)
        and body["error"]["message"]
    )


def test_every_route_for_every_role(api: Api) -> None:
    _, spec, _ = api.call("GET", "/openapi.json")
    listed = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    assert listed == set(ROLES), "a route without an entry in ROLES (or one that went away)"
    for (method, path), needed in ROLES.items():
        for role in (None, "viewer", "editor", "admin"):
            status, body, _ = api.call(method, _concrete(api, method, path), role)
            if needed is None or (role is not None and ORDER.index(role) >= ORDER.index(needed)):
                assert status == 200, (method, path, role, body)
            else:
                assert status == (401 if role is None else 403), (method, path, role, body)
                assert _is_error(body), body
                assert body["error"]["code"] == ("unauthorized" if role is None else "forbidden")


def test_errors_have_one_shape_and_the_right_status(api: Api) -> None:
    cases = [
        ("GET", "/segments/value.buyerz", 404, "unknown_segment"),
        ("GET", "/segments/value.buyers/members?limit=0", 422, "invalid"),
        ("GET", "/segments/value.buyers/members?cursor=@@", 400, "bad_request"),
        ("GET", "/customers/nobody", 404, "not_found"),
        ("GET", "/segments/value.buyers/explain/nobody", 404, "unknown_customer"),
        ("GET", "/nowhere", 404, "not_found"),
        ("PUT", "/segments", 405, "method_not_allowed"),
        ("POST", "/keys?role=boss", 422, "invalid"),
    ]
    for method, path, status, code in cases:
        got, body, _ = api.call(method, path, "admin")
        assert _is_error(body) and (got, body["error"]["code"]) == (status, code), (path, body)
        assert _is_error(body)
    got, body, _ = api.call("GET", "/segments/value.buyerz", "viewer")
    assert "did you mean 'value.buyers'" in body["error"]["message"]
    got, body, _ = api.call("GET", "/segments/value.buyers/members?limit=0", "viewer")
    assert body["error"]["location"] == "query.limit"
    got, body, _ = api.call("GET", "/segments", key="crmseg_000000000000_notarealsecretatall")
    assert (got, body["error"]["code"]) == (401, "unauthorized")


def test_members_page_by_cursor_and_stream_as_csv(api: Api) -> None:
    seen: list[str] = []
    path = "/segments/value.buyers/members?limit=1"
    while True:
        status, page, _ = api.call("GET", path, "viewer")
        assert status == 200
        seen += page["members"]
        if page["next"] is None:
            break
        path = f"/segments/value.buyers/members?limit=1&cursor={page['next']}"
    assert seen == ["1", "2", "4"] and page["total"] == 3
    status, text, kind = api.call("GET", "/segments/value.buyers/members?format=csv", "viewer")
    assert kind.startswith("text/csv") and text.splitlines() == ["customer_id", "1", "2", "4"]


def test_viewers_see_personal_data_masked(api: Api) -> None:
    _, shown, _ = api.call("GET", "/customers/1", "editor")
    _, masked, _ = api.call("GET", "/customers/1", "viewer")
    assert shown["records"][0]["email"] == "anna@example.com"
    assert masked["records"][0]["email"] == "a***@*******.***"
    assert masked["current"] == shown["current"] == ["demographic.dach", "value.buyers"]


def test_revoked_keys_are_refused(api: Api) -> None:
    _, made, _ = api.call("POST", "/keys?role=viewer&name=short-lived", "admin")
    assert api.call("GET", "/segments", key=made["key"])[0] == 200
    assert api.call("DELETE", f"/keys/{made['key_id']}", "admin")[0] == 200
    status, body, _ = api.call("GET", "/segments", key=made["key"])
    assert status == 401 and body["error"]["message"] == "unknown or revoked API key"
    _, listed, _ = api.call("GET", "/keys", "admin")
    assert all("secret" not in json.dumps(k) and "hash" not in json.dumps(k) for k in listed)


def test_keys_from_the_command_line(make_project: MakeProject) -> None:
    root = make_project()
    made = run_cli("keys", "create", "--role", "editor", "--name", "ci", "-p", str(root))
    assert made.returncode == 0, made.stderr
    text = made.stdout.strip().splitlines()[-1]
    assert text.startswith("crmseg_")
    key_id = text.split("_")[1]
    listed = run_cli("keys", "list", "-p", str(root), "--format", "json")
    rows = json.loads(listed.stdout)
    assert [(r["key_id"], r["role"], r["name"]) for r in rows] == [(key_id, "editor", "ci")]
    assert text.split("_", 2)[2] not in listed.stdout  # the secret is never shown again
    assert run_cli("keys", "revoke", key_id, "-p", str(root)).returncode == 0
    bad = run_cli("keys", "create", "--role", "boss", "-p", str(root))
    assert bad.returncode == 1
    assert bad.stderr.strip() == (
        "error: unknown role 'boss' (expected one of: viewer, editor, admin)"
    )
