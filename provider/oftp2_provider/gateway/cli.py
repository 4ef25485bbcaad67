"""``oftp2 gateway``: run the daemon, call one partner, check a configuration, hash a password.

::

    oftp2 gateway --config gateway.toml                 # run until SIGTERM / Ctrl-C
    oftp2 gateway --config gateway.toml --call acme     # one call: send queued, receive waiting
    oftp2 gateway --config gateway.toml --check         # validate and print a summary
    oftp2 gateway --hash-password                       # read a password on stdin, print its hash
    oftp2 gateway --print-reference                     # the configuration reference (Markdown)
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import sys
from typing import Any

__all__ = ["JsonFormatter", "main", "register", "setup_logging"]

_EXTRA_KEYS = ("session_id", "partner", "transfer_id", "event_id", "event_code")


class JsonFormatter(logging.Formatter):
    """One JSON object per log line, with session/transfer ids when the record carries them."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as JSON."""
        payload: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in _EXTRA_KEYS:
            value = getattr(record, key, None)
            if value is not None:
                payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = " ".join(
            f"{k}={getattr(record, k)}" for k in _EXTRA_KEYS[:3] if getattr(record, k, None) is not None
        )
        return f"{line} [{ids}]" if ids else line


def setup_logging(fmt: str = "text", level: int = logging.INFO) -> None:
    """Log to stderr as ``text`` or ``json`` lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if fmt == "json"
        else _TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Airflow's logging set-up (run when the ledger imports it) may have disabled our loggers
    for name, logger in logging.root.manager.loggerDict.items():
        if isinstance(logger, logging.Logger) and name.startswith(("oftp2", "oftp2_provider")):
            logger.disabled = False


def register(subparsers: Any) -> None:
    """Add the ``gateway`` sub-command to the ``oftp2`` command line."""
    parser = subparsers.add_parser(
        "gateway",
        help="run the OFTP2 gateway daemon",
        description="Run the OFTP2 gateway (listeners, store-and-forward, control API).",
    )
    parser.add_argument("--config", "-c", help="gateway configuration file (TOML or YAML)")
    parser.add_argument("--call", metavar="PARTNER", help="call one partner (name or Odette ID) and exit")
    parser.add_argument("--check", action="store_true", help="validate the configuration and exit")
    parser.add_argument(
        "--hash-password", action="store_true", help="read a password (stdin or prompt) and print its hash"
    )
    parser.add_argument(
        "--print-reference", action="store_true", help="print the configuration reference (Markdown)"
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, …")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Entry point of ``oftp2 gateway``."""
    if args.hash_password:
        from .passwords import hash_password

        password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
        if not password:
            print("error: empty password", file=sys.stderr)
            return 2
        print(hash_password(password))
        return 0
    if args.print_reference:
        from .docgen import render_reference

        sys.stdout.write(render_reference())
        return 0
    if not args.config:
        print("error: --config FILE is required", file=sys.stderr)
        return 2
    from .config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        print(
            json.dumps(
                {
                    "odette_id": config.identity.odette_id,
                    "listeners": [f"{lst.type}" for lst in config.listeners],
                    "partners": sorted(config.partners),
                    "control_api": config.control_api.enabled,
                    "handlers": [h.name for h in config.events.handlers],
                },
                indent=2,
            )
        )
        return 0
    from . import daemon  # imports the ledger (and Airflow, which configures logging) first

    del daemon
    setup_logging(config.log_format, getattr(logging, str(args.log_level).upper(), logging.INFO))
    if args.call:
        return asyncio.run(_call(config, args.call))
    from .daemon import run_gateway

    return asyncio.run(run_gateway(config))


async def _call(config: Any, partner: str) -> int:
    from .daemon import Gateway

    gateway = Gateway(config)
    await gateway.start(listen=False)  # ledger, recovery and event handlers; no listeners, no API
    try:
        result = await gateway.call_partner(partner)
    except (KeyError, ValueError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    finally:
        await gateway.stop(grace=0)
    from .api import to_json

    print(json.dumps(to_json(result), indent=2))
    return 0 if result.ok else 1
