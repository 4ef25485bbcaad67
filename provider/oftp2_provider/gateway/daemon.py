"""The gateway daemon: listeners, partner calls, control API, recovery and shutdown.

>>> gateway = Gateway(load_config("gateway.toml"))      # doctest: +SKIP
>>> await gateway.start()                                # listeners, API, event workers
>>> await gateway.call_partner("acme")                   # send what is queued, fetch what waits
>>> await gateway.stop()                                 # or run_gateway() until SIGTERM
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import ssl
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from oftp2_provider.ledger import (
    AsyncLedger,
    Direction,
    Ledger,
    LedgerError,
    TransferNotFound,
    TransferStatus,
    VirtualFileKey,
)
from oftp2_provider.protocol.api import (
    OutboundFile,
    Role,
    SessionConfig,
    SessionContext,
    Timeouts,
    make_timestamp,
    safe_name,
)
from oftp2_provider.protocol.commands import EERP, ProtocolLevel
from oftp2_provider.protocol.errors import EsidReason, OFTPError
from oftp2_provider.protocol.transport import (
    OFTPClient,
    OFTPServer,
    client_ssl_context,
    server_ssl_context,
)

from .accept import AcceptHook, AcceptPolicy
from .api import ApiError, ControlApi, to_json
from .config import GatewayConfig, PartnerConfig, RelayListener, TcpListener, TlsListener
from .events import EventBus, EventName
from .forward import GatewayContext, LedgerSessionHandler, inbox_name, sha256_file
from .security import ReceiptKeys, authenticator_for

__all__ = ["CallResult", "Gateway", "open_ledger", "run_gateway"]

log = logging.getLogger("oftp2.gateway")


def open_ledger(config: GatewayConfig) -> Ledger:
    """The ledger the configuration names (SQLite in ``state_dir`` by default)."""
    if config.ledger.conn_id:
        return Ledger.from_conn_id(config.ledger.conn_id)
    if config.ledger.uri:
        return Ledger.from_uri(config.ledger.uri)
    path = config.ledger_sqlite_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    return Ledger.from_sqlite(path)


@dataclass(frozen=True)
class CallResult:
    """What one call to a partner achieved."""

    partner: str
    ok: bool
    reason: int = 0
    text: str = ""
    files_sent: int = 0
    files_received: int = 0
    receipts_sent: int = 0
    receipts_received: int = 0
    session_id: str = ""
    duration: float = 0.0


@dataclass
class _Listener:
    config: TcpListener | TlsListener | RelayListener
    server: OFTPServer | None = None
    port: int | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    #: For ``relay``: the azbridge-compatible forwarder feeding the loopback server.
    forwarder: Any = None


def _ca_file(paths: list[Path]) -> Path | None:
    return paths[0] if paths else None


class Gateway:
    """One OFTP2 gateway: see the module docstring.  Also the control API's backend."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        ledger: Ledger | None = None,
        accept_hook: AcceptHook | None = None,
    ) -> None:
        self.config = config
        self.authenticator = authenticator_for(config)
        self._own_ledger = ledger is None
        self.ledger = AsyncLedger(ledger if ledger is not None else open_ledger(config))
        self.bus = EventBus(config.events.handlers, workers=config.events.workers)
        self.ctx = GatewayContext(
            config=config,
            ledger=self.ledger,
            bus=self.bus,
            policy=AcceptPolicy(config, accept_hook),
            node=config.node_name(),
            receipt_keys=ReceiptKeys(config),
        )
        self.listeners = [_Listener(cfg) for cfg in config.listeners]
        self.api: ControlApi | None = None
        self._call_locks: dict[str, asyncio.Lock] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._started = False
        self._stopped = asyncio.Event()
        self.started_at = time.time()

    # ------------------------------------------------------------------ configuration → engine

    def session_config(self, partner: PartnerConfig | None = None) -> SessionConfig:
        """Our side of a session (as responder: upper bounds; as initiator: proposals for ``partner``)."""
        identity = self.config.identity
        limits = self.config.limits
        timeouts = Timeouts(connect=30.0, read=limits.idle_timeout, idle=limits.idle_timeout)
        if partner is None:
            return SessionConfig(
                odette_id=identity.odette_id,
                password=identity.password.get_secret_value(),
                level=ProtocolLevel.V2_0,
                restart=True,
                compression=any(p.compression for p in self.config.partners.values()),
                timeouts=timeouts,
                authenticator=self.authenticator,
            )
        password = (partner.our_password or identity.password).get_secret_value()
        return SessionConfig(
            odette_id=identity.odette_id,
            password=password,
            level=ProtocolLevel(max(partner.allowed_levels)),
            sdeb=partner.max_sdeb,
            credit=partner.max_credit,
            compression=partner.compression,
            restart=partner.restart,
            secure_auth=partner.secure_auth,
            timeouts=timeouts,
            authenticator=self.authenticator,
        )

    def _server_ssl(self, cfg: TlsListener) -> ssl.SSLContext:
        pair = cfg.cert or self.config.identity.tls
        assert pair is not None  # checked by the configuration
        cas = cfg.client_ca or self.config.identity.ca_certs
        ctx = server_ssl_context(
            pair.cert, pair.key, cafile=_ca_file(cas), require_client_cert=cfg.require_client_cert
        )
        for extra in cas[1:]:
            ctx.load_verify_locations(str(extra))
        if cfg.min_version == "1.3":
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        return ctx

    def _client_ssl(self, partner: PartnerConfig) -> ssl.SSLContext:
        assert partner.address is not None
        cas = partner.address.ca_certs or self.config.identity.ca_certs
        own = self.config.identity.tls
        ctx = client_ssl_context(
            _ca_file(cas),
            certfile=own.cert if own else None,
            keyfile=own.key if own else None,
        )
        for extra in cas[1:]:
            ctx.load_verify_locations(str(extra))
        return ctx

    # ------------------------------------------------------------------ life cycle

    async def start(self, *, listen: bool = True) -> None:
        """Open the ledger, recover, start event workers, listeners and the control API.

        With ``listen=False`` (a one-off ``--call``) no listener and no control API is started.
        """
        if self._started:
            return
        self._started = True
        await asyncio.to_thread(self.config.state_dir.mkdir, parents=True, exist_ok=True)
        await self.ledger.migrate()
        await self.recover()
        await self.bus.start()
        if not listen:
            self.listeners = []
        for listener in self.listeners:
            await self._start_listener(listener)
        if listen and self.config.control_api.enabled:
            self.api = ControlApi(self, self.config.control_api)
            await self.api.start()
        self._spawn(self._maintenance())
        self.bus.emit(
            EventName.GATEWAY_STARTED,
            {"node": self.ctx.node, "listeners": self.listener_info(), "partners": len(self.config.partners)},
        )

    async def _start_listener(self, listener: _Listener) -> None:
        cfg = listener.config
        if isinstance(cfg, RelayListener):
            await self._start_relay(listener, cfg)
            return
        server = OFTPServer(
            self.session_config(),
            self._handler_factory,
            max_sessions=self.config.limits.max_sessions,
        )
        ssl_ctx = self._server_ssl(cfg) if isinstance(cfg, TlsListener) else None
        await server.start(cfg.host, cfg.port, ssl=ssl_ctx)
        listener.server = server
        listener.port = server.port
        log.info("listening on %s %s:%d", cfg.type, cfg.host, server.port)

    async def _start_relay(self, listener: _Listener, cfg: RelayListener) -> None:
        """A loopback OFTP server fed by an azbridge-compatible Hybrid Connection forwarder.

        Partners reach us through Azure Relay (``azbridge -L …`` or our ``relay-forward``) with any
        port name; no inbound port is opened.  Per-address limits do not apply (every relayed
        session comes from the loopback address); ``max_sessions`` does.
        """
        from oftp2_provider.relay.address import HybridConnectionAddress
        from oftp2_provider.relay.forward import RelayForwardListener
        from oftp2_provider.relay.sas import SasTokenProvider

        server = OFTPServer(
            self.session_config(),
            lambda ctx: LedgerSessionHandler(self.ctx, relayed=True, session_context=ctx),
            max_sessions=self.config.limits.max_sessions,
        )
        await server.start("127.0.0.1", 0)
        tokens = SasTokenProvider(cfg.key_name or "", cfg.key.get_secret_value() if cfg.key else "")
        address = HybridConnectionAddress(cfg.namespace, cfg.path, endpoint=cfg.endpoint)
        forwarder = RelayForwardListener(address, tokens, {"oftp": ("127.0.0.1", server.port)})
        try:
            await forwarder.start()
        except BaseException:
            await server.close()
            raise
        listener.server, listener.forwarder, listener.port = server, forwarder, server.port
        log.info("listening on relay %s/%s (loopback port %d)", cfg.namespace, cfg.path, server.port)

    def _handler_factory(self, session_ctx: SessionContext) -> LedgerSessionHandler:
        return LedgerSessionHandler(self.ctx, session_context=session_ctx)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _maintenance(self) -> None:
        stale = timedelta(seconds=self.config.limits.stale_sending_seconds)
        while True:
            await asyncio.sleep(min(30.0, self.config.limits.stale_sending_seconds / 4))
            try:
                requeued = await self.ledger.requeue_stale(stale)
                if requeued:
                    log.warning("requeued %d stale outbound transfer(s)", len(requeued))
            except Exception:
                log.exception("ledger maintenance failed")

    async def recover(self) -> dict[str, int]:
        """Repair what a crash may have left: our unfinished sends and renamed-but-unrecorded files.

        * outbound rows ``sending`` claimed by this node go back to the queue;
        * inbound rows ``receiving`` whose file is already complete in the inbox (the crash hit
          between the rename and the ledger update) become ``received``; rows with only a partial
          file stay resumable for the partner's restart.
        """
        stats = {"requeued": 0, "completed": 0}
        for transfer in await self.ledger.list_transfers(
            status=TransferStatus.SENDING, direction=Direction.OUTBOUND, limit=100000
        ):
            if transfer.worker == self.ctx.node:
                with contextlib.suppress(LedgerError):
                    await self.ledger.mark_failed(transfer.id, "gateway restarted", retry=True)
                    stats["requeued"] += 1
        for transfer in await self.ledger.list_transfers(
            status=TransferStatus.RECEIVING, direction=Direction.INBOUND, limit=100000
        ):
            found = self.config.partner_by_id(transfer.partner)
            if found is None:
                continue
            name, partner = found
            target = self.config.inbox_for(name) / inbox_name(transfer.key, transfer.id)
            partial = target.parent / ".partial" / target.name
            if await asyncio.to_thread(target.is_file) and not await asyncio.to_thread(partial.exists):
                size, digest = await asyncio.to_thread(sha256_file, target)
                with contextlib.suppress(LedgerError):
                    await self.ledger.complete_inbound(
                        transfer.id,
                        target,
                        size,
                        digest,
                        hold_receipt=partner.receipt_policy == "hold",
                        transmitted_size=size,
                        transmitted_digest=digest,
                    )
                    stats["completed"] += 1
        if any(stats.values()):
            log.warning("recovery: %s", stats)
        return stats

    async def stop(self, grace: float | None = None) -> None:
        """Refuse new sessions (ESID 05), let running ones finish for ``grace`` seconds, then end them (ESID 05).

        Partial inbound files stay in ``.partial`` for the partner's restart.
        """
        if not self._started:
            return
        grace = self.config.limits.shutdown_grace if grace is None else grace
        self.ctx.stopping = True
        self.bus.emit(EventName.GATEWAY_STOPPING, {"active_sessions": self.active_sessions})
        for _ in range(int(grace / 0.05)):
            if not self.active_sessions:
                break
            await asyncio.sleep(0.05)
        for listener in self.listeners:
            if listener.forwarder is not None:
                with contextlib.suppress(Exception):
                    await listener.forwarder.stop()
            if listener.server is not None:  # sessions still running get ESID 05, partials stay
                await listener.server.close(
                    EsidReason.LOCAL_SITE_EMERGENCY_CLOSE_DOWN, "gateway shutting down"
                )
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.api is not None:
            await self.api.close()
        await self.bus.close(timeout=min(grace, 10.0))
        if self._own_ledger:
            await self.ledger.close()
        self._started = False
        self._stopped.set()

    async def wait_stopped(self) -> None:
        """Wait until :meth:`stop` finished."""
        await self._stopped.wait()

    # ------------------------------------------------------------------ information

    @property
    def active_sessions(self) -> int:
        """Sessions running on all listeners plus outgoing calls."""
        inbound = sum(lst.server.active_sessions for lst in self.listeners if lst.server is not None)
        calls = sum(1 for lock in self._call_locks.values() if lock.locked())
        return inbound + calls

    def listener_info(self) -> list[dict[str, Any]]:
        """Type, host and bound port of each listener."""
        out = []
        for lst in self.listeners:
            cfg = lst.config
            info: dict[str, Any] = {"type": cfg.type, "running": lst.server is not None}
            if isinstance(cfg, RelayListener):
                info.update(namespace=cfg.namespace, path=cfg.path)
            else:
                info.update(host=cfg.host, port=lst.port)
            out.append(info)
        return out

    def port(self, kind: str = "tcp") -> int:
        """The bound port of the first listener of ``kind`` (``tcp`` or ``tls``)."""
        for lst in self.listeners:
            if lst.config.type == kind and lst.port is not None:
                return lst.port
        raise LookupError(f"no running {kind} listener")

    # ------------------------------------------------------------------ calling partners

    async def call_partner(self, name_or_id: str) -> CallResult:
        """Call a partner: send due receipts and queued files, then take what it has for us."""
        name, partner = self.config.find_partner(name_or_id)
        if partner.address is None:
            raise ValueError(f"partners.{name}.address is not configured; the gateway cannot call it")
        lock = self._call_locks.setdefault(name, asyncio.Lock())
        async with lock:
            return await self._call(name, partner)

    async def _call(self, name: str, partner: PartnerConfig) -> CallResult:
        assert partner.address is not None
        address = partner.address
        handler = LedgerSessionHandler(self.ctx, partner_name=name)
        client = OFTPClient(
            self.session_config(partner),
            address.host,
            address.port,
            partner=self.ctx.engine_partner(partner),
            ssl=self._client_ssl(partner) if address.tls else None,
            server_hostname=address.server_hostname,
            handler=handler,
        )
        started = time.monotonic()
        error: OFTPError | OSError | None = None
        try:
            await client.connect()
            handler.session_started(Role.INITIATOR, (address.host, address.port))
            while not client.session.closed:
                items = await handler.outbound(client.ctx)
                if not items:
                    break
                for item in items:
                    if isinstance(item, OutboundFile):
                        result = await client.send_file(item)
                        await handler.file_sent(result, client.ctx)
                    elif isinstance(item, EERP):
                        await client.send_eerp(item)
                    else:
                        await client.send_nerp(item)
        except (OFTPError, OSError) as exc:
            error = exc
            log.warning("call to %s failed: %s", name, exc)
        finally:
            outcome = await client.close()
            self.ctx.handlers.discard(handler)
        if error is not None and not handler.started:
            # never got a session (connect or SSID failed): session_ended did not clean up for us
            await handler.session_ended(client.ctx, outcome)
        reason = outcome.reason
        if error is not None:
            code = getattr(error, "reason", None)  # OFTP errors carry the ESID code; ssl errors a string
            reason = int(code) if isinstance(error, OFTPError) and isinstance(code, int) else 99
        text = outcome.text if error is None else str(error)
        ok = error is None and outcome.ok
        if not ok:
            self.bus.emit(
                EventName.CALL_FAILED,
                {"reason": reason, "text": text},
                session_id=handler.session_id,
                partner=name,
            )
        return CallResult(
            partner=name,
            ok=ok,
            reason=int(reason),
            text=text,
            files_sent=handler.files_sent,
            files_received=handler.files_received,
            receipts_sent=handler.receipts_sent,
            receipts_received=handler.receipts_received,
            session_id=handler.session_id,
            duration=time.monotonic() - started,
        )

    # ------------------------------------------------------------------ control API backend

    def health(self) -> dict[str, Any]:
        """Liveness for ``GET /health``."""
        return {
            "status": "stopping" if self.ctx.stopping else "ok",
            "node": self.ctx.node,
            "odette_id": self.config.identity.odette_id,
            "active_sessions": self.active_sessions,
            "listeners": self.listener_info(),
            "partners": sorted(self.config.partners),
            "event_workers": len(self.bus.pool.pids),
            "uptime_s": round(time.time() - self.started_at, 1),
        }

    async def list_transfers(
        self, *, partner: str | None, status: str | None, direction: str | None, limit: int
    ) -> list[Any]:
        """Transfers for the API (``partner`` by name or Odette ID)."""
        partner_id = self.config.find_partner(partner)[1].odette_id if partner else None
        try:
            return await self.ledger.list_transfers(
                partner=partner_id, status=status, direction=direction, limit=max(1, min(limit, 1000))
            )
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None

    async def get_transfer(self, transfer_id: int) -> tuple[Any, list[Any]]:
        """One transfer and its audit events."""
        try:
            transfer = await self.ledger.get(transfer_id)
        except TransferNotFound:
            raise ApiError(404, f"no transfer {transfer_id}") from None
        return transfer, await self.ledger.events(transfer_id)

    async def submit_file(
        self,
        partner: str,
        *,
        dsn: str,
        path: Path | None = None,
        content: bytes | None = None,
        **attrs: Any,
    ) -> Any:
        """Copy a file into the outbox and queue it for ``partner`` (name or Odette ID)."""
        try:
            name, cfg = self.config.find_partner(partner)
        except KeyError as exc:
            raise ApiError(404, str(exc.args[0])) from None
        unknown = set(attrs) - {"user_data", "description", "format", "lrecl"}
        if unknown:
            raise ApiError(400, f"unknown field(s): {', '.join(sorted(unknown))}")
        dsn = dsn.strip()
        if not dsn or len(dsn) > 26 or not all(0x21 <= ord(c) < 0x7F for c in dsn):
            raise ApiError(400, "dsn must be 1-26 printable ASCII characters without spaces")
        record_format = str(attrs.get("format", "U")).upper()
        if record_format not in ("U", "T", "F", "V"):
            raise ApiError(400, "format must be U, T, F or V")
        lrecl = int(attrs.get("lrecl", 0) or 0)
        if record_format == "F" and lrecl <= 0:
            raise ApiError(400, "format F needs lrecl > 0")
        user_data = str(attrs.get("user_data", ""))
        if len(user_data) > 8:
            raise ApiError(400, "user_data is at most 8 characters")
        date, time_ = make_timestamp()
        key = VirtualFileKey(dsn, date, time_, self.config.identity.odette_id, cfg.odette_id)
        outbox = self.config.state_dir / "outbox" / name
        stored = outbox / f"{safe_name(dsn)}_{date}{time_}"
        await asyncio.to_thread(outbox.mkdir, parents=True, exist_ok=True)
        tmp = outbox / f".{uuid.uuid4().hex}.tmp"
        try:
            if content is not None:
                await asyncio.to_thread(tmp.write_bytes, content)
            else:
                assert path is not None
                if not await asyncio.to_thread(path.is_file):
                    raise ApiError(400, f"path {path} is not a file on the gateway host")
                await asyncio.to_thread(shutil.copyfile, path, tmp)
            await asyncio.to_thread(os.replace, tmp, stored)
        finally:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(tmp.unlink)
        size, digest = await asyncio.to_thread(sha256_file, stored)
        flags = await self._protect(name, cfg, stored)
        transfer = await self.ledger.enqueue_outbound(
            cfg.odette_id,
            key,
            flags.pop("path"),
            size,
            digest,
            record_format=record_format,
            max_record_length=lrecl,
            user_data=user_data,
            description=str(attrs.get("description", "")),
            signed_eerp=cfg.security.request_signed_receipt,
            **flags,
        )
        log.info("queued %s for %s (%d octets)", key, name, size, extra={"transfer_id": transfer.id})
        return transfer

    async def _protect(self, name: str, cfg: PartnerConfig, stored: Path) -> dict[str, Any]:
        """Sign / compress / encrypt a stored outbound file per the partner's policy (CMS)."""
        sec = cfg.security
        if not (sec.sign_outbound or sec.encrypt_outbound or sec.compress_outbound):
            return {"path": stored, "cipher_suite": sec.cipher_suite}
        from oftp2_provider.protocol.cms import protect_file_async

        keys = self.ctx.receipt_keys
        assert keys is not None
        sign = keys.own if sec.sign_outbound else None
        encrypt_for = keys.encrypt_for.get(cfg.odette_id) if sec.encrypt_outbound else None
        if sec.sign_outbound and sign is None:
            raise ApiError(409, "identity.signing is needed to sign files")
        if sec.encrypt_outbound and encrypt_for is None:
            raise ApiError(409, f"partners.{name}.certificates.encryption is needed to encrypt files")
        envelope = stored.parent / ".transmitted" / stored.name
        await asyncio.to_thread(envelope.parent.mkdir, parents=True, exist_ok=True)
        result = await protect_file_async(
            stored,
            envelope,
            suite=sec.cipher_suite,
            sign_key=sign[0] if sign else None,
            sign_cert=sign[1] if sign else None,
            compress=sec.compress_outbound,
            encrypt_for=encrypt_for,
        )
        return {
            "path": envelope,
            "cipher_suite": sec.cipher_suite,
            "security_level": int(result.security_level),
            "compression": int(result.compressed),
            "envelope": result.envelope,
        }

    async def release_receipt(
        self, transfer_id: int, *, ok: bool, nerp_code: int | None = None, text: str = ""
    ) -> Any:
        """Release a held receipt (EERP, or NERP with ``nerp_code``)."""
        try:
            transfer = await self.ledger.get(transfer_id)
        except TransferNotFound:
            raise ApiError(404, f"no transfer {transfer_id}") from None
        if transfer.direction is not Direction.INBOUND:
            raise ApiError(409, f"transfer {transfer_id} is outbound; only inbound receipts can be released")
        try:
            return await self.ledger.release_receipt(
                transfer_id, ok, nerp_code=None if ok else nerp_code, text=text or None
            )
        except LedgerError as exc:
            raise ApiError(409, str(exc)) from None

    async def call_api(self, partner: str) -> dict[str, Any]:
        """``POST /partners/{name}/call``."""
        try:
            result = await self.call_partner(partner)
        except KeyError as exc:
            raise ApiError(404, str(exc.args[0])) from None
        except ValueError as exc:
            raise ApiError(409, str(exc)) from None
        payload: dict[str, Any] = to_json(result)
        return payload

    def recent_events(self, limit: int) -> list[dict[str, Any]]:
        """The latest events, newest last."""
        events = list(self.bus.history)[-max(1, min(limit, 1000)) :]
        return [e.to_dict() for e in events]


async def run_gateway(config: GatewayConfig, *, ready: asyncio.Event | None = None) -> int:
    """Run until SIGTERM/SIGINT, then stop gracefully; returns the exit code."""
    loop = asyncio.get_running_loop()
    # ledger calls run in threads: with many concurrent sessions the default pool (CPUs + 4) is
    # the bottleneck, not the database
    loop.set_default_executor(ThreadPoolExecutor(max_workers=32, thread_name_prefix="oftp2-io"))
    gateway = Gateway(config)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await gateway.start()
        log.info("gateway %s ready: %s", config.identity.odette_id, gateway.listener_info())
        if ready is not None:
            ready.set()
        await stop.wait()
        log.info("shutting down")
    finally:
        await gateway.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return 0
