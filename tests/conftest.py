"""Fixtures shared by the checkpoint tests."""
import pytest


@pytest.fixture
def ckdir(tmp_path):
    return tmp_path / "ckpt"
