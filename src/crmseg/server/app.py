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
import csv
import io
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from crmseg import __version__
from crmseg.errors import (
    ActivationError,
    ApiKeyError,
    BackendError,
    CrmsegError,
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

# The status of each kind of error, most specific first.
STATUS: tuple[tuple[type[CrmsegError], int], ...] = (
    (NotFoundError, 404),
    (ApiKeyError, 404),
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
        self.lock = threading.Lock()  # one caller at a time on the connections
        self.running = threading.Lock()  # one run at a time

    def close(self) -> None:
        self.ws.close()


def create_app(root: Path) -> FastAPI:
    """The API over the project at ``root``."""
    server = Server(root)
    app = FastAPI(
        title="crmseg",
        version=__version__,
        description="Segments, customers and runs of one crmseg project.",
    )
    app.state.server = server
    app.router.add_event_handler("shutdown", server.close)

    @app.exception_handler(CrmsegError)
    async def crmseg_error(request: Request, exc: CrmsegError) -> JSONResponse:
        location = str(exc.location) if isinstance(exc, LocatedError) else None
        message = exc.message if isinstance(exc, LocatedError) else str(exc)
        code = _snake(type(exc).__name__.removesuffix("Error") or "crmseg")
        return error(status_of(exc), code, message, location)

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
    return app


def _snake(name: str) -> str:
    out = "".join(f"_{c.lower()}" if c.isupper() else c for c in name)
    return out.lstrip("_")


# --- dependencies ----------------------------------------------------------------------------


def caller(
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


def role(needed: Role) -> Callable[..., ApiKey]:
    """A dependency admitting keys of ``needed`` or a higher role (403 otherwise)."""

    def admit(key: Annotated[ApiKey, Depends(caller)]) -> ApiKey:
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
    return [_health, _segments, _customers, _runs, _keys]


def _health(app: FastAPI) -> None:
    @app.get("/health", tags=["health"])
    def health() -> Any:
        """Liveness: no key needed."""
        return {"status": "ok", "version": __version__}


def _segments(app: FastAPI) -> None:
    @app.get("/segments", tags=["segments"])
    def segments(ws: Ws, key: Viewer) -> Any:
        """Every segment with owner, layer, refresh, size at the last run and English."""
        return jsonable_encoder(ws.catalog())

    @app.get("/segments/{name}", tags=["segments"])
    def segment(name: str, ws: Ws, key: Viewer) -> Any:
        """One segment's definition and English."""
        seg = ws.segment(name)
        entry = next((e for e in ws.catalog() if e.get("name") == name), {})
        return jsonable_encoder({**entry, "definition": seg.spec.model_dump(mode="json")})

    @app.get("/segments/{name}/preview", tags=["segments"])
    def preview(name: str, ws: Ws, key: Viewer, as_of: AsOf = None) -> Any:
        """Size, share, sample members and English at an instant."""
        found = ws.preview(name, as_of)
        return jsonable_encoder({**found.__dict__, "share": found.share})

    @app.get("/segments/{name}/members", tags=["segments"], response_model=None)
    def members(
        name: str,
        ws: Ws,
        key: Viewer,
        as_of: AsOf = None,
        cursor: Annotated[str | None, Query(description="from the previous page's next")] = None,
        limit: Annotated[int, Query(ge=1, le=MOST)] = PAGE,
        format: Annotated[str, Query(pattern="^(json|csv)$")] = "json",
    ) -> dict[str, Any] | Response:
        """Members (person keys) in id order, a page at a time; ``format=csv`` gives them all."""
        ids = ws.members(name, as_of)
        if format == "csv":
            out = io.StringIO()
            writer = csv.writer(out)
            writer.writerow(["customer_id"])
            writer.writerows([i] for i in ids)
            return Response(out.getvalue(), media_type="text/csv")
        after = _after(cursor)
        start = 0 if after is None else _bisect(ids, after)
        page = ids[start : start + limit]
        more = start + limit < len(ids)
        return {
            "segment": name,
            "total": len(ids),
            "members": page,
            "next": _cursor(page[-1]) if more and page else None,
        }

    @app.get("/segments/{name}/history", tags=["segments"])
    def history(name: str, ws: Ws, key: Viewer) -> Any:
        """Size per run, with entered and exited counts and definition changes."""
        return jsonable_encoder(ws.history(name))

    @app.get("/segments/{name}/explain/{customer_id}", tags=["segments"])
    def explain(name: str, customer_id: str, ws: Ws, key: Viewer, as_of: AsOf = None) -> Any:
        """Each sub-condition's value for one customer (masked for viewers)."""
        found = ws.explain(name, customer_id, as_of, mask=not key.allows("editor"))
        return jsonable_encoder(found)


def _bisect(ids: list[str], after: str) -> int:
    import bisect

    return bisect.bisect_right(ids, after)


def _customers(app: FastAPI) -> None:
    @app.get("/customers/{customer_id}", tags=["customers"])
    def customer(customer_id: str, ws: Ws, key: Viewer) -> Any:
        """Current segments, every entry and exit, and the source records (masked for
        viewers); any of a person's record ids finds them."""
        found = ws.profile(customer_id, mask=not key.allows("editor"))
        if not found["records"] and not found["segments"]:
            raise HTTPException(404, f"no customer with id {customer_id!r}")
        return jsonable_encoder(found)


def _runs(app: FastAPI) -> None:
    @app.get("/runs", tags=["runs"])
    def runs(ws: Ws, key: Viewer) -> Any:
        """Every recorded run, oldest first."""
        return jsonable_encoder(ws.runs())

    @app.post("/runs", tags=["runs"])
    def start(request: Request, key: Editor, as_of: AsOf = None) -> Any:
        """Run the catalog now (or at ``as_of``); 409 while another run is going."""
        server: Server = request.app.state.server
        if not server.running.acquire(blocking=False):
            raise HTTPException(409, "a run is already going: one writer at a time")
        try:
            with server.lock:
                result = server.ws.run(as_of=as_of)
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
        return {**jsonable_encoder(made), "key": text}

    @app.delete("/keys/{key_id}", tags=["keys"])
    def revoke(request: Request, key_id: str, key: Admin) -> Any:
        """Revoke a key; requests with it get 401 from now on."""
        server: Server = request.app.state.server
        with server.lock:
            return jsonable_encoder(server.keys.revoke(key_id))
