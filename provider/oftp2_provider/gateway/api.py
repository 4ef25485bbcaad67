"""The control API: a small HTTP(S) JSON API on the gateway (off by default).

Every route except ``GET /health`` needs HTTP Basic credentials of a configured user (salted
scrypt/PBKDF2 hashes, see :mod:`oftp2_provider.gateway.passwords`); read-only users may only use
``GET`` routes (anything else answers 403).

| Method | Path | What |
|---|---|---|
| GET | `/health` | liveness, sessions, listeners (no auth) |
| GET | `/api/v1/transfers` | list (`partner`, `status`, `direction`, `limit`) |
| GET | `/api/v1/transfers/{id}` | one transfer with its audit events |
| POST | `/api/v1/transfers` | submit a file for a partner (JSON or raw body) |
| POST | `/api/v1/transfers/{id}/release` | release a held receipt (EERP) |
| POST | `/api/v1/transfers/{id}/refuse` | release a held receipt as NERP (`nerp_code`) |
| POST | `/api/v1/partners/{name}/call` | call a partner now |
| GET | `/api/v1/events` | recent gateway events |

Submitting: ``POST /api/v1/transfers`` with a JSON body ``{"partner", "path", "dsn", ...}`` for a
file already on the gateway host, or with the file as the raw body
(``Content-Type: application/octet-stream``) and ``partner``/``dsn`` as query parameters.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import enum
import hashlib
import logging
import math
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .config import ApiUser, ControlApiConfig
from .passwords import verify_password

__all__ = ["ApiError", "ControlApi", "ControlBackend", "create_app", "to_json"]

log = logging.getLogger("oftp2.gateway.api")

#: Largest raw upload accepted by ``POST /api/v1/transfers`` (octets).
MAX_UPLOAD = 1 << 30


class ApiError(Exception):
    """An error with an HTTP status, raised by a backend to answer the client."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


class ControlBackend(Protocol):
    """What the API needs from the gateway."""

    def health(self) -> dict[str, Any]:
        """Liveness information."""
        ...

    async def list_transfers(
        self, *, partner: str | None, status: str | None, direction: str | None, limit: int
    ) -> list[Any]:
        """Transfers, newest first."""
        ...

    async def get_transfer(self, transfer_id: int) -> tuple[Any, list[Any]]:
        """A transfer and its events (raise ``ApiError(404, …)`` when unknown)."""
        ...

    async def submit_file(
        self, partner: str, *, dsn: str, path: Path | None = None, content: bytes | None = None, **attrs: Any
    ) -> Any:
        """Queue a file for a partner."""
        ...

    async def release_receipt(
        self, transfer_id: int, *, ok: bool, nerp_code: int | None = None, text: str = ""
    ) -> Any:
        """Release a held receipt."""
        ...

    async def call_api(self, partner: str) -> dict[str, Any]:
        """Call a partner now; returns a JSON summary."""
        ...

    def recent_events(self, limit: int) -> list[dict[str, Any]]:
        """The latest gateway events."""
        ...


def to_json(value: Any) -> Any:
    """Ledger rows (dataclasses, enums, paths, bytes) as JSON-ready values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Path):
        return str(value)
    return value


class _Users:
    """Credential checks with a small cache so each request does not pay a full scrypt."""

    def __init__(self, users: list[ApiUser]) -> None:
        self._users = {u.name: u for u in users}
        self._ok: dict[tuple[str, bytes], bool] = {}

    def check(self, header: str | None) -> ApiUser | None:
        if not header or not header.lower().startswith("basic "):
            return None
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        name, sep, password = decoded.partition(":")
        user = self._users.get(name)
        if not sep or user is None:
            verify_password(password, "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAA")  # even out timing
            return None
        key = (name, hashlib.sha256(f"{user.password_hash}\0{password}".encode()).digest())
        if key not in self._ok:
            if len(self._ok) > 1024:
                self._ok.clear()
            self._ok[key] = verify_password(password, user.password_hash)
        return user if self._ok[key] else None


class _FailedLogins:
    """Brute-force guard: an address that sent ``max_failures`` wrong credentials within ``window``
    seconds gets 429 for ``window`` seconds, whatever it sends, then starts afresh."""

    def __init__(self, max_failures: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max_failures
        self.window = window
        self._clock = clock
        self._failures: dict[str, list[float]] = {}
        self._locked_until: dict[str, float] = {}

    def retry_after(self, address: str) -> float:
        """Seconds the address is still locked out (0 when it may try)."""
        until = self._locked_until.get(address)
        if until is None:
            return 0.0
        left = until - self._clock()
        if left <= 0:
            del self._locked_until[address]
            return 0.0
        return left

    def failed(self, address: str) -> None:
        now = self._clock()
        recent = [t for t in self._failures.get(address, []) if now - t < self.window]
        recent.append(now)
        if len(recent) >= self.max_failures:
            self._locked_until[address] = now + self.window
            self._failures.pop(address, None)
            log.warning(
                "control API: %d wrong credentials from %s within %.0f s; locked out for %.0f s",
                len(recent),
                address,
                self.window,
                self.window,
            )
        else:
            self._failures[address] = recent
        if len(self._failures) > 10_000:  # bound memory under a distributed attack
            self._failures.clear()

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    if status == 401:
        headers = {"WWW-Authenticate": 'Basic realm="oftp2-gateway"', **(headers or {})}
    return JSONResponse({"error": message}, status_code=status, headers=headers)


Handler = Callable[[Request], Awaitable[Response]]


def create_app(
    backend: ControlBackend,
    users: list[ApiUser],
    *,
    max_auth_failures: int = 10,
    auth_lockout_seconds: float = 60.0,
) -> Starlette:
    """The ASGI application for ``backend`` with Basic auth against ``users``.

    An address that sends ``max_auth_failures`` wrong credentials within ``auth_lockout_seconds`` is
    answered 429 (with ``Retry-After``) for that long, so passwords cannot be brute-forced.
    """
    checker = _Users(users)
    limiter = _FailedLogins(max_auth_failures, auth_lockout_seconds)

    def guarded(func: Handler, *, write: bool) -> Handler:
        async def endpoint(request: Request) -> Response:
            address = request.client.host if request.client else "unknown"
            wait = limiter.retry_after(address)
            if wait > 0:
                return _error(
                    429, "too many failed logins; try again later", {"Retry-After": str(math.ceil(wait))}
                )
            header = request.headers.get("authorization")
            user = await asyncio.to_thread(checker.check, header)
            if user is None:
                if header:
                    limiter.failed(address)
                return _error(401, "authentication required")
            limiter.succeeded(address)
            if write and user.read_only:
                return _error(403, f"user {user.name} is read-only")
            request.state.user = user.name
            try:
                return await func(request)
            except ApiError as exc:
                return _error(exc.status, exc.message)
            except KeyError as exc:
                return _error(404, str(exc.args[0]) if exc.args else "not found")
            except ValueError as exc:
                return _error(400, str(exc))

        return endpoint

    async def health(request: Request) -> Response:
        return JSONResponse(backend.health())

    async def list_transfers(request: Request) -> Response:
        q = request.query_params
        try:
            limit = int(q.get("limit", "100"))
        except ValueError:
            raise ApiError(400, "limit must be an integer") from None
        rows = await backend.list_transfers(
            partner=q.get("partner"), status=q.get("status"), direction=q.get("direction"), limit=limit
        )
        return JSONResponse({"transfers": to_json(rows)})

    def _id(request: Request) -> int:
        try:
            return int(request.path_params["transfer_id"])
        except ValueError:
            raise ApiError(400, "transfer id must be an integer") from None

    async def show_transfer(request: Request) -> Response:
        transfer, events = await backend.get_transfer(_id(request))
        return JSONResponse({"transfer": to_json(transfer), "events": to_json(events)})

    async def submit(request: Request) -> Response:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        attrs: dict[str, Any]
        if content_type == "application/json":
            try:
                body = await request.json()
            except ValueError:
                raise ApiError(400, "body is not valid JSON") from None
            if not isinstance(body, dict):
                raise ApiError(400, "JSON body must be an object")
            attrs = dict(body)
            partner = attrs.pop("partner", None)
            path = attrs.pop("path", None)
            dsn = attrs.pop("dsn", None)
            if not isinstance(path, str) or not path:
                raise ApiError(400, "field 'path' (a file on the gateway host) is required")
            content = None
            file_path: Path | None = Path(path)
        else:
            attrs = dict(request.query_params)
            partner = attrs.pop("partner", None)
            dsn = attrs.pop("dsn", None)
            declared = request.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > MAX_UPLOAD:
                raise ApiError(413, f"upload larger than {MAX_UPLOAD} octets")
            content = await request.body()
            file_path = None
        if not isinstance(partner, str) or not partner:
            raise ApiError(400, "field 'partner' is required")
        if not isinstance(dsn, str) or not dsn:
            raise ApiError(400, "field 'dsn' is required")
        transfer = await backend.submit_file(partner, dsn=dsn, path=file_path, content=content, **attrs)
        return JSONResponse({"transfer": to_json(transfer)}, status_code=201)

    async def _release_body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if not raw:
            return {}
        try:
            body = await request.json()
        except ValueError:
            raise ApiError(400, "body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "JSON body must be an object")
        return body

    async def release(request: Request) -> Response:
        body = await _release_body(request)
        transfer = await backend.release_receipt(_id(request), ok=True, text=str(body.get("text", "")))
        return JSONResponse({"transfer": to_json(transfer)})

    async def refuse(request: Request) -> Response:
        body = await _release_body(request)
        code = body.get("nerp_code")
        if isinstance(code, bool) or not isinstance(code, int):
            raise ApiError(400, "field 'nerp_code' (integer NERP reason) is required")
        transfer = await backend.release_receipt(
            _id(request), ok=False, nerp_code=code, text=str(body.get("text", ""))
        )
        return JSONResponse({"transfer": to_json(transfer)})

    async def call(request: Request) -> Response:
        result = await backend.call_api(request.path_params["name"])
        return JSONResponse(to_json(result))

    async def events(request: Request) -> Response:
        try:
            limit = int(request.query_params.get("limit", "100"))
        except ValueError:
            raise ApiError(400, "limit must be an integer") from None
        return JSONResponse({"events": backend.recent_events(limit)})

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/api/v1/transfers", guarded(list_transfers, write=False), methods=["GET"]),
        Route("/api/v1/transfers", guarded(submit, write=True), methods=["POST"]),
        Route("/api/v1/transfers/{transfer_id}", guarded(show_transfer, write=False), methods=["GET"]),
        Route("/api/v1/transfers/{transfer_id}/release", guarded(release, write=True), methods=["POST"]),
        Route("/api/v1/transfers/{transfer_id}/refuse", guarded(refuse, write=True), methods=["POST"]),
        Route("/api/v1/partners/{name}/call", guarded(call, write=True), methods=["POST"]),
        Route("/api/v1/events", guarded(events, write=False), methods=["GET"]),
    ]
    return Starlette(routes=routes)


class ControlApi:
    """Runs :func:`create_app` with uvicorn inside the gateway's event loop."""

    def __init__(self, backend: ControlBackend, config: ControlApiConfig) -> None:
        self.config = config
        self.app = create_app(
            backend,
            list(config.users),
            max_auth_failures=config.max_auth_failures,
            auth_lockout_seconds=config.auth_lockout_seconds,
        )
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        """Base URL of the running API."""
        scheme = "https" if self.config.tls else "http"
        host = self.config.host if ":" not in self.config.host else f"[{self.config.host}]"
        return f"{scheme}://{host}:{self.port}"

    async def start(self) -> None:
        """Bind the socket and start serving."""
        import uvicorn

        class _Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Any:  # the gateway owns the signal handlers
                yield

        tls = self.config.tls
        kwargs: dict[str, Any] = {}
        if tls is not None:
            kwargs = {
                "ssl_certfile": str(tls.cert),
                "ssl_keyfile": str(tls.key),
                "ssl_keyfile_password": tls.key_password.get_secret_value() if tls.key_password else None,
                "ssl_version": ssl.PROTOCOL_TLS_SERVER,
            }
        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.config.host, self.config.port))
        sock.listen(128)
        sock.setblocking(False)
        self._socket = sock
        self.port = int(sock.getsockname()[1])
        uv_config = uvicorn.Config(
            self.app,
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=5,
            **kwargs,
        )
        self._server = _Server(uv_config)
        self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[sock]))
        for _ in range(500):
            if self._server.started or self._task.done():
                break
            await asyncio.sleep(0.01)
        if self._task.done():
            self._task.result()  # raise the start-up error
        log.info("control API listening on %s", self.url)

    async def close(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._task, 10)
        if self._socket is not None:
            self._socket.close()
