"""Where decisions and epochs live. `DecisionStore` is the interface; SQLite is the embedded default.

The fleet-epoch (§7, §9.2) and etcd names are imported on first use: etcd's client pulls in etcd3gw and
requests (~0.1 s), which a plain save or restore never needs."""
from __future__ import annotations

import importlib
from typing import Any

from fito.coord.base import Decision, DecisionStore
from fito.coord.sqlite import SqliteDecisionStore

_LAZY = {
    "EpochCoordinator": "fito.coord.fleet_base", "EpochDecision": "fito.coord.fleet_base",
    "EpochFollower": "fito.coord.fleet_base", "FleetStore": "fito.coord.fleet_base", "NodeLease": "fito.coord.fleet_base",
    "SqliteFleetStore": "fito.coord.sqlite_fleet",
    "EtcdDecisionStore": "fito.coord.etcd", "EtcdFleetStore": "fito.coord.etcd", "EtcdTransport": "fito.coord.etcd",
}

__all__ = ["Decision", "DecisionStore", "SqliteDecisionStore", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fito.coord' has no attribute {name!r}")
