"""``oftp2 relay-emulator`` and ``oftp2 relay-forward`` sub-commands."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import ssl
import sys

from oftp2_provider.relay.address import HybridConnectionAddress
from oftp2_provider.relay.emulator import DEFAULT_KEY_NAME, RelayEmulator
from oftp2_provider.relay.errors import RelayConfigurationError, RelayError
from oftp2_provider.relay.forward import RelayForwardListener, RelayForwardSender
from oftp2_provider.relay.sas import RelayConnectionString, SasTokenProvider


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``relay-emulator`` and ``relay-forward`` to the ``oftp2`` command."""
    emu = subparsers.add_parser(
        "relay-emulator",
        help="run a loopback Azure Relay Hybrid Connections emulator",
        description="Serve listen/connect/accept/request and HTTP senders like Azure Relay, on one local port.",
    )
    emu.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    emu.add_argument("--port", type=int, default=9351, help="TCP port (0 = any free port; default 9351)")
    emu.add_argument("--namespace", default="relay-emulator.local", help="namespace host named in tokens")
    emu.add_argument("--key-name", default=DEFAULT_KEY_NAME, help="SAS rule name")
    emu.add_argument("--key", default=None, help="SAS key (default: random, printed at start)")
    emu.add_argument(
        "--hybrid-connection",
        action="append",
        dest="hybrid_connections",
        metavar="NAME",
        help="a Hybrid Connection name (repeatable; default hc1)",
    )
    emu.add_argument("--advertise-host", default=None, help="host put into accept/request addresses")
    emu.add_argument("--tls-cert", default=None, help="PEM certificate: serve wss:// and https://")
    emu.add_argument("--tls-key", default=None, help="PEM private key for --tls-cert")
    emu.add_argument("--anonymous-senders", action="store_true", help="do not require sender tokens")
    emu.set_defaults(func=_run_emulator)

    fwd = subparsers.add_parser(
        "relay-forward",
        help="azbridge-compatible TCP forwarding over a Hybrid Connection",
        description=(
            "Remote side: -T PORTNAME:HOST:PORT (relay → local service, like azbridge -R/-T). "
            "Local side: -L [BINDHOST:]BINDPORT:PORTNAME (local port → relay, like azbridge -L)."
        ),
    )
    fwd.add_argument("--connection-string", "-x", default=None, help="Endpoint=sb://…;SharedAccessKeyName=…")
    fwd.add_argument("--namespace", default=None, help="namespace host (instead of a connection string)")
    fwd.add_argument(
        "--path", "--hybrid-connection", dest="path", default=None, help="Hybrid Connection name"
    )
    fwd.add_argument("--key-name", default=None, help="SAS rule name")
    fwd.add_argument("--key", default=None, help="SAS key")
    fwd.add_argument("--endpoint", default=None, help="endpoint override, e.g. ws://127.0.0.1:9351")
    fwd.add_argument("-T", dest="targets", action="append", default=[], metavar="PORTNAME:HOST:PORT")
    fwd.add_argument("-L", dest="local", default=None, metavar="[BINDHOST:]BINDPORT:PORTNAME")
    fwd.set_defaults(func=_run_forward)


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _run_emulator(args: argparse.Namespace) -> int:
    _logging()
    context = None
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
    keys = {args.key_name: args.key} if args.key else None
    emulator = RelayEmulator(
        host=args.host,
        port=args.port,
        namespace=args.namespace,
        keys=keys,
        hybrid_connections=args.hybrid_connections or ["hc1"],
        ssl=context,
        advertise_host=args.advertise_host,
        requires_client_authorization=not args.anonymous_senders,
    )

    async def main() -> None:
        await emulator.start()
        print(f"relay emulator on {emulator.url} (http: {emulator.http_url})", flush=True)
        print(f"hybrid connections: {', '.join(sorted(emulator.hybrid_connections))}", flush=True)
        print(f"connection string: {emulator.connection_string()}", flush=True)
        print(f"endpoint override: {emulator.url}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await emulator.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    return 0


def _forward_settings(args: argparse.Namespace) -> tuple[HybridConnectionAddress, SasTokenProvider]:
    if args.connection_string:
        cs = RelayConnectionString.parse(args.connection_string)
        path = args.path or cs.entity_path
        if not path:
            raise RelayConfigurationError("give --path or EntityPath in the connection string")
        return HybridConnectionAddress(cs.namespace, path, args.endpoint), cs.token_provider()
    missing = [n for n in ("namespace", "path", "key_name", "key") if not getattr(args, n)]
    if missing:
        raise RelayConfigurationError(
            "give --connection-string or all of --namespace --path --key-name --key (missing: "
            + ", ".join("--" + m.replace("_", "-") for m in missing)
            + ")"
        )
    return HybridConnectionAddress(args.namespace, args.path, args.endpoint), SasTokenProvider(
        args.key_name, args.key
    )


def _parse_target(text: str) -> tuple[str, tuple[str, int]]:
    name, _, rest = text.partition(":")
    host, _, port = rest.rpartition(":")
    if not name or not host or not port.isdigit():
        raise RelayConfigurationError(f"-T expects PORTNAME:HOST:PORT, got {text!r}")
    return name, (host, int(port))


def _parse_local(text: str) -> tuple[str, int, str]:
    parts = text.split(":")
    if len(parts) == 2:
        parts.insert(0, "127.0.0.1")
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2]:
        raise RelayConfigurationError(f"-L expects [BINDHOST:]BINDPORT:PORTNAME, got {text!r}")
    return parts[0], int(parts[1]), parts[2]


def _run_forward(args: argparse.Namespace) -> int:
    _logging()
    try:
        address, tokens = _forward_settings(args)
        if bool(args.targets) == bool(args.local):
            raise RelayConfigurationError("give either -T (remote side) or -L (local side)")
        targets = dict(_parse_target(t) for t in args.targets)
        local = _parse_local(args.local) if args.local else None
    except RelayConfigurationError as exc:
        print(f"oftp2 relay-forward: {exc}", file=sys.stderr)
        return 2

    async def main() -> None:
        if local is not None:
            sender = RelayForwardSender(address, tokens, local[2], bind_host=local[0], bind_port=local[1])
            port = await sender.start()
            print(f"forwarding {local[0]}:{port} → {address.path}/{local[2]}", flush=True)
            try:
                await asyncio.Event().wait()
            finally:
                await sender.stop()
        else:
            forwarder = RelayForwardListener(address, tokens, targets)
            await forwarder.start()
            print(f"forwarding {address.path} → {targets}", flush=True)
            try:
                await forwarder.wait()
            finally:
                await forwarder.stop()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        return 0
    except RelayError as exc:
        print(f"oftp2 relay-forward: {exc}", file=sys.stderr)
        return 1
    return 0
