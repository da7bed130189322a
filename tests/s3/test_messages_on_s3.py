"""Errors on an object-store root speak of objects and name their URL (issue 17): a truncated object, a missing
manifest, a missing object, a GC that cannot delete. A local root's messages are unchanged (tests elsewhere pin
them)."""
from __future__ import annotations

import obstore
import pytest
import torch

import fito
from fito.coord.object_store import ObjectDecisionStore
from fito.storage.s3 import S3Storage


def _objects(storage: S3Storage, step: int) -> dict[str, str]:
    keys = [o.key for o in storage.list(f"epochs/{step:012d}")]
    return {"object": next(k for k in keys if k.endswith(".fito")), "manifest": next(k for k in keys if "manifest" in k)}


@pytest.mark.slow
def test_errors_on_s3_name_the_object_url_and_never_a_file(seaweed) -> None:
    url = seaweed.new_url()
    storage = S3Storage(url, storage_options=seaweed.options())
    ck = fito.Checkpointer(storage, store=ObjectDecisionStore.for_storage(storage))
    for step in (1, 2, 3):
        ck.save(step, {"w": torch.full((1024,), float(step))})
    step3, step2 = _objects(storage, 3), _objects(storage, 2)
    data = bytes(obstore.get(storage.store, step3["object"]).bytes())
    obstore.put(storage.store, step3["object"], data[: len(data) // 2])  # truncated in place (a foreign writer)
    storage.delete(step2["manifest"])
    messages = []
    for step in (3, 2):
        with pytest.raises(fito.CheckpointCorruptError) as info:
            ck.restore({"w": torch.zeros(1024)}, step=step)
        messages.append(" ".join(str(info.value).split()))
    assert f"{url}/{step3['object']}" in messages[0] and "truncated" in messages[0], messages[0]
    assert f"{url}/{step2['manifest']}" in messages[1] and "no such object" in messages[1], messages[1]
    for m in messages:
        assert "file" not in m and "permission" not in m, m
    out = {"w": torch.zeros(1024)}
    assert ck.restore(out, step=3, fallback=True) == 1 and out["w"].eq(1).all()  # the refusals were clean
    ck.close()


@pytest.mark.slow
def test_an_unreachable_endpoint_is_a_bounded_error_naming_the_url_and_what_to_check() -> None:
    import time

    from fito.testing.etcd import free_ports
    from fito.errors import FitoError

    port = free_ports(1)[0]  # nothing listens there
    options = {"endpoint": f"http://127.0.0.1:{port}", "access_key_id": "k", "secret_access_key": "s",
               "region": "us-east-1", "allow_http": "true"}
    storage = S3Storage("s3://fito/run", storage_options=options, max_retries=1, retry_timeout_s=2)
    for what, call in (("list the objects", lambda: storage.list("epochs")),
                       ("list the decision log", lambda: fito.Checkpointer(storage).committed()),
                       ("list the objects", lambda: storage.delete("epochs/000000000001"))):  # GC lists first
        started = time.monotonic()
        with pytest.raises((OSError, FitoError)) as info:
            call()
        text = " ".join(str(info.value).split())
        assert time.monotonic() - started < 20, what
        assert "s3://fito/run" in text and what in text and "check the endpoint, the credentials" in text, text
        assert "file" not in text and "permission" not in text.lower(), text
