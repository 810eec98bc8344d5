"""``crmseg serve``: a REST API over the same :class:`~crmseg.workspace.Workspace` the CLI uses.

Routes stay thin: each takes the workspace and the caller's key by dependency and returns what
a facade method returns. Every route but ``/health`` needs an API key (``Authorization: Bearer
crmseg_...`` or ``X-API-Key``); a viewer sees personal data masked. Every error has one shape,
``{"error": {"code", "message", "location"}}``, with the status its kind calls for.

DuckDB connections serve one caller at a time, so requests take the workspace in turn; a run
holds it for its duration, and a second run asked for meanwhile gets 409.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import io
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse

from crmseg import __version__
from crmseg.errors import (
    ActivationError,
    ApiKeyError,
    BackendError,
    BackpressureError,
    ConflictError,
    CrmsegError,
    EventError,
    ForbiddenError,
    ForgetError,
    LocatedError,
    MissingDependencyError,
    NotFoundError,
    QualityError,
    RuleErrors,
    SegmentError,
    SourceError,
    StateError,
)
from crmseg.server.keys import ApiKey, KeyStore, Role
from crmseg.workspace import Workspace

if TYPE_CHECKING:
    from crmseg.server.scheduler import Scheduler

# The status of each kind of error, most specific first.
STATUS: tuple[tuple[type[CrmsegError], int], ...] = (
    (EventError, 400),
    (BackpressureError, 429),
    (NotFoundError, 404),
    (ApiKeyError, 404),
    (ForbiddenError, 403),
    (ConflictError, 409),
    (LocatedError, 422),
    (RuleErrors, 422),
    (SourceError, 422),
    (QualityError, 422),
    (ActivationError, 422),
    (ForgetError, 422),
    (SegmentError, 409),  # asked before the state allows it (no run yet, ...)
    (MissingDependencyError, 501),
    (BackendError, 502),
    (StateError, 503),
)
_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    422: "invalid",
    429: "too_many_requests",
    500: "internal_error",
}
PAGE = 1000  # members per page by default
MOST = 10_000  # members per page at most


def error(status: int, code: str, message: str, location: str | None = None) -> JSONResponse:
    """The one error shape every route answers with."""
    body = {"error": {"code": code, "message": message, "location": location}}
    return JSONResponse(body, status_code=status)


def status_of(exc: CrmsegError) -> int:
    return next((s for kind, s in STATUS if isinstance(exc, kind)), 400)


class Server:
    """The workspace, its keys and the locks requests take it by."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ws = Workspace.open(root)
        self.keys = KeyStore(self.ws.state)
        # one caller at a time on the connections; reentrant, so the stream processor
        # (which takes it around its own uses) can be driven by a holder
        self.lock = threading.RLock()
        self.running = threading.Lock()  # one run at a time
        self.scheduler: Scheduler | None = None
        from crmseg.server.streaming import StreamWorker

        self.stream = StreamWorker(self)
        # Answers that only a write can change (members at an instant, the catalog), kept
        # until the next write through this server, or one by another process to a shared
        # state (see ``watch``).
        self._cache: dict[tuple[Any, ...], Any] = {}
        self._writes = self.ws.state.writes()  # the state's count of committed writes
        self._fresh: tuple[float, list[Any]] = (float("-inf"), [])
        self._refreshing = False
        self.current: dict[str, Any] | None = None  # the run going now, with its progress
        self._files = (time.monotonic(), self.ws.definition_files())

    @contextlib.contextmanager
    def tracked(self, by: str, as_of: datetime | None) -> Iterator[Callable[[str, float], None]]:
        """While a run goes: who started it, when, and its latest step (``GET /runs/current``)."""
        from crmseg.segments.runs import utcnow

        now = {"by": by, "as_of": as_of, "started_at": utcnow(), "step": "starting",
               "fraction": 0.0}  # fmt: skip
        self.current = now

        def report(step: str, fraction: float) -> None:
            now.update(step=step, fraction=round(max(0.0, min(1.0, fraction)), 3))

        try:
            yield report
        finally:
            self.current = None

    def cached(self, key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
        """``compute()`` once per ``key`` until :meth:`changed`; the lock only on a miss."""
        found = self._cache.get(key, _MISSING)
        if found is _MISSING:
            with self.lock:
                found = compute()
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[key] = found
        return found

    def kept(self, key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
        """:meth:`cached` for a caller that already holds the lock (the dashboard's pages)."""
        found = self._cache.get(key, _MISSING)
        if found is _MISSING:
            found = self._cache[key] = compute()
        return found

    async def answer(self, key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
        """:meth:`cached` from an async route: a hit costs no thread, a miss computes in one."""
        found = self._cache.get(key, _MISSING)
        if found is _MISSING:
            from starlette.concurrency import run_in_threadpool

            found = await run_in_threadpool(self.cached, key, compute)
        return found

    async def freshness(self) -> list[Any]:
        """Every segment's freshness, computed at most once a second (it moves with time) by
        one request at a time; the others meanwhile answer with the previous second's."""
        at, found = self._fresh
        if time.monotonic() - at <= 1.0 or (self._refreshing and at > float("-inf")):
            return found
        from starlette.concurrency import run_in_threadpool

        def compute() -> list[Any]:
            with self.lock:
                return list(self.ws.freshness())

        self._refreshing = True
        try:
            found = await run_in_threadpool(compute)
            self._fresh = (time.monotonic(), found)
        finally:
            self._refreshing = False
        return found

    def watch(self) -> None:
        """At most once a second: definition files edited outside the server (by hand, a git
        pull), or a state that another process wrote (a shared state on PostgreSQL: another
        server, the command line), drop the cached definitions and answers, as a write
        through the server does."""
        at, files = self._files
        if time.monotonic() - at < 1.0:
            return
        now = self.ws.definition_files()
        writes = self.ws.state.writes()  # on a connection of its own: never waits for ours
        if writes != self._writes:
            # keys too (one revoked through another server stops working here); they are
            # read on the connections, so not while a request holds them: next time then
            if not self.lock.acquire(blocking=False):
                return
            try:
                self.keys.reload()
            finally:
                self.lock.release()
        self._files = (time.monotonic(), now)
        if now != files or writes != self._writes:
            self._writes = writes
            self.changed()

    def changed(self, stream: bool = True) -> None:
        """A run, an approval, an activation or a forget: every cached answer may be stale,
        and (unless ``stream`` is False) the stream processor starts again from the history."""
        self._cache.clear()
        self._fresh = (float("-inf"), [])
        self.ws._reload_definitions()
        if stream:
            self.stream.reset()

    def stream_changed(self, segments: set[str]) -> None:
        """Real time moved these segments' members: their cached answers go."""
        for key in [k for k in self._cache if len(k) > 1 and k[1] in segments]:
            self._cache.pop(key, None)
        self._cache.pop(("catalog",), None)
        self._fresh = (float("-inf"), [])

    def close(self) -> None:
        self.ws.close()


_MISSING = object()


def create_app(root: Path, schedule: bool = True) -> FastAPI:
    """The API over the project at ``root``; with ``schedule`` (and ``schedule.enabled``) the
    scheduler keeps its segments fresh while it serves."""
    from crmseg.server.scheduler import Scheduler

    server = Server(root)
    server.scheduler = Scheduler(server)
    if schedule and server.ws.config.schedule.enabled:
        app_start: Callable[[], None] = server.scheduler.start
    else:
        app_start = server.scheduler.disable
    app = FastAPI(
        title="crmseg",
        version=__version__,
        description="Segments, customers and runs of one crmseg project.",
    )
    app.state.server = server
    app.add_middleware(_Watch, server=server)
    app.router.add_event_handler("startup", app_start)
    app.router.add_event_handler("startup", server.stream.start)
    app.router.add_event_handler("shutdown", server.stream.stop)
    app.router.add_event_handler("shutdown", server.scheduler.stop)
    app.router.add_event_handler("shutdown", server.close)

    @app.exception_handler(CrmsegError)
    async def crmseg_error(request: Request, exc: CrmsegError) -> JSONResponse:
        location = str(exc.location) if isinstance(exc, LocatedError | EventError) else None
        message = exc.message if isinstance(exc, LocatedError) else str(exc)
        code = _snake(type(exc).__name__.removesuffix("Error") or "crmseg")
        answer = error(status_of(exc), code, message, location)
        if isinstance(exc, BackpressureError):
            answer.headers["Retry-After"] = str(exc.retry_after)
        return answer

    from starlette.exceptions import HTTPException as StarletteHTTPException  # and FastAPI's

    @app.exception_handler(StarletteHTTPException)
    async def starlette_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, _CODES.get(exc.status_code, "error"), str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error(422, "invalid", str(first.get("msg", "invalid request")), where or None)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        return error(500, "internal_error", f"internal error: {type(exc).__name__}")

    for route in routes(server):
        route(app)
    from crmseg.server import dashboard

    dashboard.add(app, server)

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/ui", status_code=303)

    return app


class _Watch:
    """Plain ASGI middleware (no per-request task, unlike ``@app.middleware``): each request
    first lets the server notice definition files edited outside it."""

    def __init__(self, app: Any, server: Server) -> None:
        self.app = app
        self.server = server

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.server.watch()
        await self.app(scope, receive, send)


def _snake(name: str) -> str:
    out = "".join(f"_{c.lower()}" if c.isupper() else c for c in name)
    return out.lstrip("_")


# --- dependencies ----------------------------------------------------------------------------


async def caller(  # async: an in-memory check, no thread hop per request
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> ApiKey:
    """The API key of the request (401 without a live one)."""
    server: Server = request.app.state.server
    text = x_api_key
    if authorization and authorization.lower().startswith("bearer "):
        text = authorization[7:]
    if not text:
        raise HTTPException(401, "an API key is required: Authorization: Bearer crmseg_...")
    key = server.keys.check(text)
    if key is None:
        raise HTTPException(401, "unknown or revoked API key")
    return key


def role(needed: Role) -> Callable[..., Awaitable[ApiKey]]:
    """A dependency admitting keys of ``needed`` or a higher role (403 otherwise)."""

    async def admit(key: Annotated[ApiKey, Depends(caller)]) -> ApiKey:
        if not key.allows(needed):
            raise HTTPException(403, f"this needs an {needed} key (yours is a {key.role} key)")
        return key

    admit.__name__ = f"needs_{needed}"
    return admit


def workspace(request: Request) -> Iterator[Workspace]:
    """The workspace, held by this request until it has answered."""
    server: Server = request.app.state.server
    with server.lock:
        yield server.ws


Viewer = Annotated[ApiKey, Depends(role("viewer"))]
Editor = Annotated[ApiKey, Depends(role("editor"))]
Admin = Annotated[ApiKey, Depends(role("admin"))]
Ws = Annotated[Workspace, Depends(workspace)]
AsOf = Annotated[datetime | None, Query(description="an instant (default: the segment's last run)")]


def _cursor(last: str) -> str:
    return base64.urlsafe_b64encode(last.encode()).decode().rstrip("=")


def _after(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        last = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        last = ""
    if not last:
        raise HTTPException(400, f"not a cursor from this API: {cursor!r}")
    return last


# --- routes ---------------------------------------------------------------------------------


def routes(server: Server) -> list[Callable[[FastAPI], None]]:
    """Each adds its routes to the app (grouped by resource)."""
    return [_health, _segments, _events, _changes, _customers, _campaigns, _runs, _data, _keys]


def _health(app: FastAPI) -> None:
    @app.get("/health", tags=["health"])
    def health() -> Any:
        """Liveness: no key needed."""
        return {"status": "ok", "version": __version__}


def _segments(app: FastAPI) -> None:
    @app.get("/segments", tags=["segments"])
    def segments(ws: Ws, key: Viewer) -> Any:
        """Every segment with owner, layer, refresh, size at the last run and English, and its
        freshness: last run, next due, stale (with why), and the data's newest row."""
        fresh = {f.segment: f for f in ws.freshness()}
        edge = max((t for t in ws.watermark().values() if t is not None), default=None)
        return jsonable_encoder(
            [{**e, "freshness": fresh.get(e["name"]), "data_watermark": edge} for e in ws.catalog()]
        )

    @app.get("/segments/{name}", tags=["segments"])
    async def segment(request: Request, name: str, key: Viewer) -> Any:
        """One segment's definition, English, size at the last run and freshness."""
        server: Server = request.app.state.server
        ws = server.ws
        seg = ws.segment(name)
        catalog = await server.answer(("catalog",), ws.catalog)
        entry: dict[str, Any] = next((e for e in catalog if e.get("name") == name), {})
        fresh = next((f for f in await server.freshness() if f.segment == name), None)
        definition = seg.spec.model_dump(mode="json")
        return jsonable_encoder({**entry, "definition": definition, "freshness": fresh})

    @app.get("/segments/{name}/preview", tags=["segments"])
    def preview(name: str, ws: Ws, key: Viewer, as_of: AsOf = None) -> Any:
        """Size, share, sample members and English at an instant."""
        found = ws.preview(name, as_of)
        return jsonable_encoder({**found.__dict__, "share": found.share})

    @app.get("/segments/{name}/members", tags=["segments"], response_model=None)
    async def members(
        request: Request,
        name: str,
        key: Viewer,
        as_of: AsOf = None,
        cursor: Annotated[str | None, Query(description="from the previous page's next")] = None,
        limit: Annotated[int, Query(ge=1, le=MOST)] = PAGE,
        format: Annotated[str, Query(pattern="^(json|csv)$")] = "json",
    ) -> dict[str, Any] | Response:
        """Members (person keys) in id order, a page at a time; ``format=csv`` gives them all."""
        server: Server = request.app.state.server
        server.ws.segment(name)  # an unknown name is a 404 with a suggestion
        ids = await server.answer(("members", name, as_of), lambda: server.ws.members(name, as_of))
        if format == "csv":
            return StreamingResponse(_csv_chunks(ids), media_type="text/csv")
        after = _after(cursor)
        start = 0 if after is None else _bisect(ids, after)
        page = ids[start : start + limit]
        more = start + limit < len(ids)
        body = {
            "segment": name,
            "total": len(ids),
            "members": page,
            "next": _cursor(page[-1]) if more and page else None,
        }
        # plain strings: json.dumps, not the encoder's walk over a thousand values
        return Response(json.dumps(body), media_type="application/json")

    @app.get("/segments/{name}/definitions", tags=["segments"])
    def definitions(name: str, ws: Ws, key: Viewer) -> Any:
        """Every definition the segment ran with (from which run), and its working one if
        not run yet, each with a unified diff against the one before."""
        return jsonable_encoder(ws.definitions(name))

    @app.get("/segments/{name}/reach", tags=["segments"])
    async def reach(request: Request, name: str, key: Viewer, as_of: AsOf = None) -> Any:
        """Members, and per consent channel how many of them may be contacted there."""
        server: Server = request.app.state.server
        server.ws.segment(name)
        found = await server.answer(("reach", name, as_of), lambda: server.ws.reach(name, as_of))
        return jsonable_encoder(found)

    @app.get("/segments/{name}/history", tags=["segments"])
    def history(name: str, ws: Ws, key: Viewer) -> Any:
        """Size per run, with entered and exited counts and definition changes."""
        return jsonable_encoder(ws.history(name))

    @app.get("/segments/{name}/explain/{customer_id}", tags=["segments"])
    def explain(name: str, customer_id: str, ws: Ws, key: Viewer, as_of: AsOf = None) -> Any:
        """Each sub-condition's value for one customer (masked for viewers)."""
        found = ws.explain(name, customer_id, as_of, mask=not key.allows("editor"))
        return jsonable_encoder(found)


def _csv_chunks(ids: list[str], size: int = 10_000) -> Iterator[str]:
    """The members as CSV, sent a chunk at a time (no second copy of a large segment)."""
    yield "customer_id\r\n"
    for start in range(0, len(ids), size):
        out = io.StringIO()
        csv.writer(out).writerows([i] for i in ids[start : start + size])
        yield out.getvalue()


def _events(app: FastAPI) -> None:
    @app.post("/events", tags=["events"])
    async def events(request: Request, key: Editor) -> Any:
        """Store a batch of events, orders and consent changes (a JSON array; see
        docs/realtime.md) and answer once it is durable; the realtime segments follow. A bad
        item refuses the whole batch (400 naming each bad item and field); a backlog past
        ``stream.max_pending`` or a busy workspace gets 429 with Retry-After."""
        from starlette.concurrency import run_in_threadpool

        server: Server = request.app.state.server
        body = await request.body()
        try:
            items = json.loads(body)
        except ValueError as exc:
            raise EventError([(0, "", f"not JSON: {exc}")]) from None
        return jsonable_encoder(await run_in_threadpool(server.stream.ingest, items))

    @app.get("/events/status", tags=["events"])
    async def status(request: Request, key: Viewer) -> Any:
        """The stream processor: whether it runs, the instant it evaluated last, the backlog,
        when the next sweep is due, and its last error."""
        return jsonable_encoder(request.app.state.server.stream.status())

    @app.get("/segments/{name}/changes", tags=["segments"])
    async def changes(
        request: Request,
        name: str,
        key: Viewer,
        cursor: Annotated[int, Query(ge=0, description="the last change_id seen")] = 0,
        wait: Annotated[float, Query(ge=0, le=60, description="seconds to wait for one")] = 0,
        limit: Annotated[int, Query(ge=1, le=MOST)] = PAGE,
    ) -> Any:
        """Entries and exits of a segment after ``cursor``, oldest first, with instants,
        reasons and causes; with ``wait``, a long poll: the answer comes as soon as there is
        a change, or empty when the wait is over. Pass the answer's ``next`` as ``cursor``."""
        import asyncio

        from starlette.concurrency import run_in_threadpool

        from crmseg.stream.changes import ChangeLog

        server: Server = request.app.state.server
        server.ws.segment(name)
        deadline = time.monotonic() + wait

        def read() -> list[dict[str, Any]]:
            with server.lock:
                return ChangeLog(server.ws.state).after(cursor, name, limit)

        while True:
            seen = server.stream.version
            rows = await run_in_threadpool(read)
            if rows or time.monotonic() >= deadline:
                break
            while server.stream.version == seen and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        nxt = rows[-1]["change_id"] if rows else cursor
        # text, ids and instants only: the C encoder (pages of thousands under load)
        page = {"segment": name, "changes": rows, "next": nxt}
        return Response(json.dumps(page, default=_iso), media_type="application/json")


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _bisect(ids: list[str], after: str) -> int:
    import bisect

    return bisect.bisect_right(ids, after)


def _changes(app: FastAPI) -> None:
    @app.post("/changes", tags=["changes"])
    async def propose(request: Request, key: Editor) -> Any:
        """Propose a new or changed segment: the body is the YAML of a segments file with one
        segment. Stored pending with its membership impact; nothing changes until approved."""
        text = (await request.body()).decode("utf-8", errors="replace")
        server: Server = request.app.state.server

        def work() -> Any:
            with server.lock:
                return jsonable_encoder(server.ws.propose(text, key.key_id))

        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(work)

    @app.get("/changes", tags=["changes"])
    def changes(
        ws: Ws,
        key: Viewer,
        status: Annotated[str | None, Query(pattern="^(pending|approved|rejected)$")] = None,
    ) -> Any:
        """Proposed changes, oldest first, with their impact."""
        return jsonable_encoder(ws.changes(status))

    @app.get("/changes/{change_id}", tags=["changes"])
    def change(change_id: int, ws: Ws, key: Viewer) -> Any:
        """One change: its text, definition hashes, impact and decision."""
        return jsonable_encoder(ws.change(change_id))

    @app.post("/changes/{change_id}/approve", tags=["changes"])
    def approve(request: Request, change_id: int, ws: Ws, key: Editor) -> Any:
        """Write the change into the project's YAML (another editor than its author, or an
        admin); the next run uses it."""
        done = ws.decide(change_id, True, key.key_id, key.allows("admin"))
        request.app.state.server.changed()
        return jsonable_encoder(done)

    @app.post("/changes/{change_id}/reject", tags=["changes"])
    def reject(change_id: int, ws: Ws, key: Editor) -> Any:
        """Close the change without writing it."""
        return jsonable_encoder(ws.decide(change_id, False, key.key_id))

    @app.get("/audit", tags=["changes"])
    def audit(ws: Ws, key: Viewer, limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> Any:
        """Who did what, newest first: key id, time, action, object, before/after hash."""
        return jsonable_encoder(ws.audit(limit))


def _customers(app: FastAPI) -> None:
    @app.get("/customers", tags=["customers"])
    def find(
        ws: Ws,
        key: Viewer,
        q: Annotated[str, Query(min_length=1, description="an id, email, phone or identifier")],
    ) -> Any:
        """The people (person keys) an id, email, phone or identifier names."""
        return {"q": q, "customers": ws.lookup(q)}

    @app.post("/customers/{customer_id}/forget", tags=["customers"])
    def forget(request: Request, customer_id: str, ws: Ws, key: Admin) -> Any:
        """Erase the person everywhere crmseg keeps them (see docs/privacy.md)."""
        done = ws.forget([customer_id])
        request.app.state.server.changed()
        ws.record(key.key_id, "forget", f"{done.people} person(s)")  # never who: no trace
        return jsonable_encoder(done)

    @app.get("/customers/{customer_id}", tags=["customers"])
    def customer(customer_id: str, ws: Ws, key: Viewer) -> Any:
        """Current segments, every entry and exit, and the source records (masked for
        viewers); any of a person's record ids finds them."""
        found = ws.profile(customer_id, mask=not key.allows("editor"))
        if not found["records"] and not found["segments"]:
            raise HTTPException(404, f"no customer with id {customer_id!r}")
        return jsonable_encoder(found)


def _campaigns(app: FastAPI) -> None:
    @app.get("/campaigns", tags=["campaigns"])
    def campaigns(ws: Ws, key: Viewer) -> Any:
        """Every campaign's definition, with where it is defined."""
        return [
            {**c.spec.model_dump(mode="json"), "file": c.file, "line": c.line, "hash": c.hash}
            for c in ws.campaigns
        ]

    @app.get("/campaigns/{name}/preview", tags=["campaigns"])
    def preview(name: str, ws: Ws, key: Viewer, as_of: AsOf = None) -> Any:
        """The audience funnel a dry run gives: nothing is recorded or sent."""
        return jsonable_encoder(ws.activate(name, dry_run=True, as_of=as_of).summary())

    @app.post("/campaigns/{name}/activate", tags=["campaigns"])
    def activate(request: Request, name: str, ws: Ws, key: Editor, as_of: AsOf = None) -> Any:
        """Record the audience in the send log and deliver it to the campaign's destinations."""
        done = ws.activate(name, as_of=as_of)
        request.app.state.server.changed(stream=False)
        ws.record(key.key_id, "activate", f"campaign {name} (activation {done.activation_id})")
        return jsonable_encoder(done.summary())

    @app.get("/campaigns/{name}/activations", tags=["campaigns"])
    def activations(name: str, ws: Ws, key: Viewer) -> Any:
        """Recorded activations of the campaign, oldest first, with their funnels."""
        return jsonable_encoder(ws.activations(name))

    @app.get("/campaigns/{name}/lift", tags=["campaigns"])
    def lift(
        name: str, ws: Ws, key: Viewer, window: Annotated[int, Query(ge=1, le=365)] = 14
    ) -> Any:
        """Treatment vs holdout lift with 95% intervals, over ``window`` days after sends."""
        ws.campaign(name)
        if not any(a["campaign"] == name for a in ws.activations(name)):
            raise HTTPException(409, f"campaign {name!r} has not been activated yet")
        return jsonable_encoder(ws.measure_campaigns(window, [name]))


def _data(app: FastAPI) -> None:
    @app.get("/overlap", tags=["segments"])
    def overlap(
        ws: Ws,
        key: Viewer,
        segments: Annotated[str | None, Query(description="comma-separated names")] = None,
    ) -> Any:
        """Shared members and Jaccard of every pair of segments at the last run."""
        names = [s for s in (segments or "").split(",") if s] or None
        found = ws.overlap(names)
        pairs = [
            {"a": a, "b": b, "shared": shared, "jaccard": jaccard}
            for (a, b), (shared, jaccard) in found["matrix"].items()
        ]
        return jsonable_encoder({**found, "matrix": pairs})

    @app.get("/quality", tags=["data"])
    def quality(ws: Ws, key: Viewer, as_of: AsOf = None) -> Any:
        """The data-quality checks on the sources now (examples masked)."""
        report = ws.quality(as_of)
        findings = [f.as_dict() for f in report.findings]
        return jsonable_encoder({"as_of": report.as_of, "findings": findings})

    @app.get("/identity", tags=["data"])
    def identity(ws: Ws, key: Viewer) -> Any:
        """Merge statistics: people, merged clusters, links, blocked values."""
        return jsonable_encoder(ws.identity())

    @app.get("/traits", tags=["data"])
    def traits(ws: Ws, key: Viewer, as_of: AsOf = None) -> Any:
        """Built-in, user and model traits with their English and the lifecycle thresholds."""
        return jsonable_encoder(ws.trait_catalog(as_of))

    @app.get("/models", tags=["data"])
    def models(ws: Ws, key: Viewer) -> Any:
        """Recorded model fits, newest first."""
        return jsonable_encoder(ws.model_records())


def _runs(app: FastAPI) -> None:
    @app.get("/runs", tags=["runs"])
    def runs(ws: Ws, key: Viewer) -> Any:
        """Every recorded run, oldest first."""
        return jsonable_encoder(ws.runs())

    @app.get("/schedule", tags=["runs"])
    def schedule(request: Request, ws: Ws, key: Viewer) -> Any:
        """The scheduler: whether it runs, its last look, recent attempts (errors, retries)
        and every segment's freshness."""
        server: Server = request.app.state.server
        scheduler = server.scheduler
        assert scheduler is not None
        return jsonable_encoder(
            {
                "running": scheduler.active,
                "check_seconds": ws.config.schedule.check_seconds,
                "grace_minutes": ws.config.schedule.grace_minutes,
                "last_tick": scheduler.last_tick,
                "attempts": scheduler.store.attempts(20),
                "freshness": ws.freshness(),
                "data_watermark": ws.watermark(),
            }
        )

    @app.get("/runs/current", tags=["runs"])
    async def current(request: Request, key: Viewer) -> Any:
        """The run going now (started by a key or the scheduler): its instant, when it
        started, its step and the fraction done; ``running: false`` when none is."""
        now = request.app.state.server.current
        return jsonable_encoder({"running": now is not None, **(now or {})})

    @app.get("/runs/{run_id}", tags=["runs"])
    def one(run_id: int, ws: Ws, key: Viewer) -> Any:
        """One recorded run: what it loaded, reused and fitted, and its sizes."""
        found = [r for r in ws.runs() if r.run_id == run_id]
        if not found:
            raise HTTPException(404, f"no run {run_id}")
        return jsonable_encoder(found[0])

    @app.post("/runs", tags=["runs"])
    def start(request: Request, key: Editor, as_of: AsOf = None) -> Any:
        """Run the catalog now (or at ``as_of``); 409 while another run is going."""
        server: Server = request.app.state.server
        if not server.running.acquire(blocking=False):
            raise HTTPException(409, "a run is already going: one writer at a time")
        try:
            with server.lock, server.tracked(f"key {key.key_id}", as_of) as progress:
                try:
                    result = server.ws.run(as_of=as_of, progress=progress)
                finally:
                    server.changed()
                server.ws.record(key.key_id, "run", f"run {result.run_id}")
        finally:
            server.running.release()
        return jsonable_encoder(result)


def _keys(app: FastAPI) -> None:
    @app.get("/keys", tags=["keys"])
    def keys(request: Request, key: Admin) -> Any:
        """Every API key (ids, roles, names; never secrets)."""
        server: Server = request.app.state.server
        with server.lock:
            return jsonable_encoder(server.keys.list())

    @app.post("/keys", tags=["keys"])
    def create(
        request: Request,
        key: Admin,
        of: Annotated[Role, Query(alias="role", description="viewer, editor or admin")],
        name: Annotated[str, Query(max_length=200)] = "",
    ) -> Any:
        """A new key; its text is in this answer only."""
        server: Server = request.app.state.server
        with server.lock:
            made, text = server.keys.create(of, name)
            server.ws.record(key.key_id, "create key", f"{made.role} key {made.key_id}")
        return {**jsonable_encoder(made), "key": text}

    @app.delete("/keys/{key_id}", tags=["keys"])
    def revoke(request: Request, key_id: str, key: Admin) -> Any:
        """Revoke a key; requests with it get 401 from now on."""
        server: Server = request.app.state.server
        with server.lock:
            done = server.keys.revoke(key_id)
            server.ws.record(key.key_id, "revoke key", f"{done.role} key {done.key_id}")
            return jsonable_encoder(done)
