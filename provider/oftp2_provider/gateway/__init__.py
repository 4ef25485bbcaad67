"""The OFTP2 gateway daemon: listeners, partner directory, accept hooks, event handlers,
store-and-forward over the transfer ledger, and a small control API.

* :mod:`~oftp2_provider.gateway.config` — the TOML/YAML configuration (pydantic models);
* :mod:`~oftp2_provider.gateway.daemon` — :class:`~oftp2_provider.gateway.daemon.Gateway`;
* :mod:`~oftp2_provider.gateway.forward` — the ledger-bound session handler;
* :mod:`~oftp2_provider.gateway.accept`, :mod:`~oftp2_provider.gateway.events`,
  :mod:`~oftp2_provider.gateway.api`, :mod:`~oftp2_provider.gateway.security`;
* ``oftp2 gateway`` — :mod:`~oftp2_provider.gateway.cli`.

Submodules are imported on demand: the event-handler worker processes import only what they need.
"""
