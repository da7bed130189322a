"""Real etcd servers for the coordination tests: one single-member and one 3-member cluster per session,
each test isolated by its own key prefix. Tests that kill members restart them before they return."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fito.coord.etcd import EtcdDecisionStore
from fito.coord.etcd_fleet import EtcdFleetStore
from fito.coord.etcd_testing import EtcdCluster
from fito.coord.sqlite import SqliteDecisionStore
from fito.coord.sqlite_fleet import SqliteFleetStore


@pytest.fixture(scope="session")
def etcd1() -> Iterator[EtcdCluster]:
    with EtcdCluster(size=1) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def etcd3() -> Iterator[EtcdCluster]:
    with EtcdCluster(size=3) as cluster:
        yield cluster


@pytest.fixture
def prefix() -> str:
    return f"/test/{uuid.uuid4().hex}/"


@pytest.fixture(params=["sqlite", "etcd"])
def decision_store_factory(request: pytest.FixtureRequest, tmp_path: Path, prefix: str):
    """A function returning a new handle on ONE shared decision log (two handles = two coordinators)."""
    if request.param == "sqlite":
        path = tmp_path / SqliteDecisionStore.FILENAME
        return lambda: SqliteDecisionStore(path)
    cluster = request.getfixturevalue("etcd1")
    return lambda: EtcdDecisionStore(cluster.endpoints, prefix=prefix)


@pytest.fixture(params=["sqlite", "etcd"])
def fleet_store_factory(request: pytest.FixtureRequest, tmp_path: Path, prefix: str):
    """A function returning a new handle on ONE shared fleet-epoch store."""
    if request.param == "sqlite":
        path = tmp_path / SqliteFleetStore.FILENAME
        return lambda: SqliteFleetStore(path)
    cluster = request.getfixturevalue("etcd1")
    return lambda: EtcdFleetStore(cluster.endpoints, prefix=prefix)
