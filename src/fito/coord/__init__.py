"""Where decisions and epochs live. `DecisionStore` is the interface; SQLite is the embedded default."""
from fito.coord.base import Decision, DecisionStore
from fito.coord.sqlite import SqliteDecisionStore

__all__ = ["Decision", "DecisionStore", "SqliteDecisionStore"]

# Fleet epochs (§7, §9.2) and the etcd backend.
from fito.coord.fleet_base import EpochCoordinator, EpochDecision, EpochFollower, FleetStore, NodeLease  # noqa: E402
from fito.coord.sqlite_fleet import SqliteFleetStore  # noqa: E402
from fito.coord.etcd import EtcdDecisionStore, EtcdFleetStore, EtcdTransport  # noqa: E402

__all__ += [
    "EpochCoordinator", "EpochDecision", "EpochFollower", "FleetStore", "NodeLease", "SqliteFleetStore",
    "EtcdDecisionStore", "EtcdFleetStore", "EtcdTransport",
]
