"""Where decisions and epochs live. `DecisionStore` is the interface; SQLite is the embedded default for a local
root; `ObjectDecisionStore` keeps them beside the objects of an S3 root (the default there, see `default_store`)
or of a POSIX root several machines share;
etcd (fito.coord.etcd, .etcd_fleet) is optional and imported only when one of its names is used, so that
`fito.Checkpointer` never loads etcd3gw or requests."""
from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "Decision",
    "DecisionStore",
    "SqliteDecisionStore",
    # fleet epochs (paper §7, §9.2)
    "EpochCoordinator",
    "EpochDecision",
    "EpochFollower",
    "FleetStore",
    "NodeLease",
    "SqliteFleetStore",
    # decisions on the checkpoint's own storage (S3, or a POSIX root shared by several machines)
    "ObjectDecisionStore",
    "ConditionalWriteUnsupportedError",
    "default_store",
    # the etcd back-end
    "EtcdDecisionStore",
    "EtcdFleetStore",
    "EtcdTransport",
]

_WHERE = {
    "Decision": "base", "DecisionStore": "base", "SqliteDecisionStore": "sqlite",
    "EpochCoordinator": "fleet_base", "EpochDecision": "fleet_base", "EpochFollower": "fleet_base",
    "FleetStore": "fleet_base", "NodeLease": "fleet_base", "SqliteFleetStore": "sqlite_fleet",
    "ObjectDecisionStore": "object_store", "ConditionalWriteUnsupportedError": "object_log",
    "default_store": "choose",
    "EtcdDecisionStore": "etcd", "EtcdFleetStore": "etcd_fleet", "EtcdTransport": "etcd_transport",
}
_SUBMODULES = ("base", "choose", "collectives", "etcd", "etcd_fleet", "etcd_transport", "etcd_txn", "fleet_base",
               "object_log", "object_store", "sqlite", "sqlite_fleet")


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f"fito.coord.{_WHERE[name]}"), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"fito.coord.{name}")
    else:
        raise AttributeError(f"module 'fito.coord' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_SUBMODULES})
