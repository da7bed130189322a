"""Fixtures shared by the checkpoint tests."""
import pytest


@pytest.fixture
def ckdir(tmp_path):
    return tmp_path / "ckpt"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that starts a real etcd server `etcd` (directly, or through the etcd parameter of
    the store factories in tests/coord/conftest.py), so `-m "not etcd"` runs without one."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if {"etcd1", "etcd3"} & set(item.fixturenames) or "etcd" in params.values():
            item.add_marker(pytest.mark.etcd)
