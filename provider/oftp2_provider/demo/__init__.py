"""``make demo``: the whole path end to end on loopback, shown from the ledgers.

``python -m oftp2_provider.demo [--workdir DIR]`` (default ``<repo>/.demo``, emptied first):

* generates a demo PKI (CA, our identity, the partner's);
* starts the relay emulator, a *partner* gateway and *our* gateway (``oftp2 gateway``; TLS listeners,
  secure authentication, signed + compressed + encrypted files and signed EERPs between the two
  gateways; our gateway holds receipts until a DAG releases them and also listens on the relay);
* starts Airflow (``api-server``, ``dag-processor``, ``scheduler``, ``triggerer``) on SQLite metadata
  with the repository's ``dags/`` and a SQLite ledger shared with our gateway;
* runs four steps and prints one table row each, with the transfer's life from the ledger:

  1. the send DAG sends a file to the partner and waits, deferred, for its signed EERP;
  2. the partner gateway submits a file for us and calls us; the event-driven inbound DAG processes
     it and releases the held EERP; our gateway calls the partner, whose ledger shows it delivered;
  3. a webhook through the relay emulator starts one run of the relay webhook DAG;
  4. the partner calls us through the relay tunnel (``relay-forward -L`` → emulator → our gateway's
     relay listener) and a secured file arrives.

Every process runs in its own process group and is stopped by PID at the end, also on failure or
Ctrl-C.  Exit code 0 only when every step succeeded; logs stay under ``<workdir>/logs``.
"""

from __future__ import annotations

from .runner import main

__all__ = ["main"]
