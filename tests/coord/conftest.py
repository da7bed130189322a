"""Real etcd servers for the coordination tests: one single-member and one 3-member cluster per session,
each test isolated by its own key prefix. Tests that kill members restart them before they return."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fito.coord.etcd import EtcdDecisionStore
from fito.coord.etcd_fleet import EtcdFleetStore
from fito.testing.etcd import EtcdCluster
from fito.coord.object_log import LocalObjects
from fito.coord.object_store import ObjectDecisionStore
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


@pytest.fixture(params=["sqlite", "etcd", "objects-local", "objects-s3"])
def decision_store_factory(request: pytest.FixtureRequest, tmp_path: Path, prefix: str):
    """A function returning a new handle on ONE shared decision log (two handles = two coordinators):
    SQLite, etcd, and the storage-native store (fito.coord.object_store) on a directory and on S3 (SeaweedFS)."""
    if request.param == "sqlite":
        path = tmp_path / SqliteDecisionStore.FILENAME
        return lambda: SqliteDecisionStore(path)
    if request.param == "objects-local":
        return lambda: ObjectDecisionStore(LocalObjects(tmp_path / "decisions.d"))
    if request.param == "objects-s3":
        from fito.storage.s3 import S3Storage

        server = request.getfixturevalue("seaweed")
        url = server.new_url()
        return lambda: ObjectDecisionStore.for_storage(S3Storage(url, storage_options=server.options()))
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
