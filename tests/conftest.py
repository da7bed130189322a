"""Fixtures shared by the checkpoint tests."""
from collections.abc import Iterator

import pytest


@pytest.fixture
def ckdir(tmp_path):
    return tmp_path / "ckpt"


@pytest.fixture(scope="session")
def seaweed() -> Iterator["object"]:
    """One real S3 server (SeaweedFS `weed mini` on 127.0.0.1) per session; each test takes its own prefix
    (`seaweed.new_url()`)."""
    from fito.testing.s3server import SeaweedS3

    with SeaweedS3() as server:
        yield server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that starts a real etcd server `etcd` (directly, or through the etcd parameter of
    the store factories in tests/coord/conftest.py), so `-m "not etcd"` runs without one; likewise `s3` for
    the S3 server (SeaweedFS)."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if {"etcd1", "etcd3"} & set(item.fixturenames) or "etcd" in params.values():
            item.add_marker(pytest.mark.etcd)
        if "seaweed" in item.fixturenames or "objects-s3" in params.values():
            item.add_marker(pytest.mark.s3)
