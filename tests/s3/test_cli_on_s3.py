"""`fito inspect|verify|export|gc|recover-log s3://bucket/prefix` (issue 17): each command once on one saved
root, configured by the standard AWS environment variables only, through the storage's own decision log (the
objects under decisions.d/), with nothing local."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import fito
from fito.cli import main
from fito.storage.s3 import S3Storage


def _run(capsys, *argv: str) -> tuple[int, dict]:
    code = main([*argv, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else {}


@pytest.mark.slow
def test_every_checkpoint_command_on_an_s3_url(seaweed, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # anything written "locally" would land here
    for k, v in seaweed.env().items():
        monkeypatch.setenv(k, v)
    url = seaweed.new_url()
    ck = fito.Checkpointer(url)
    model = torch.nn.Linear(8, 4)
    for step in (1, 2):
        with torch.no_grad():
            model.weight.fill_(float(step))
        ck.save(step, {"model": model})
    ck.close()
    storage = S3Storage(url)

    code, doc = _run(capsys, "inspect", url)
    assert code == 0, doc
    assert [(a["epoch"], a["status"], a["lattice"]) for a in doc["result"]] == [(1, "committed", "C"), (2, "committed", "C")]

    code, doc = _run(capsys, "verify", url)
    assert code == 0 and doc["result"]["whole"] and doc["result"]["epoch"] == 2, doc

    code, doc = _run(capsys, "export", url, str(tmp_path / "out"), "--only", "model")
    assert code == 0, doc
    from safetensors.torch import load_file
    assert load_file(str(tmp_path / "out" / "model.safetensors"))["weight"].eq(2).all()

    code, doc = _run(capsys, "gc", url, "--keep", "1", "--grace", "0")
    assert code == 0 and len(doc["result"]["removed"]) == 1 and "/000000000001/" in doc["result"]["removed"][0] + "/"
    assert {o.key.split("/")[1] for o in storage.list("epochs")} == {"000000000002"}  # step 1's objects deleted

    storage.delete("decisions.d")  # the log is lost: recover it from the whole attempts
    code, doc = _run(capsys, "recover-log", url)
    assert code == 0 and not doc["result"]["applied"] and doc["result"]["restores"] == 2, doc
    assert not list(storage.list("decisions.d/log"))  # a dry run writes nothing
    code, doc = _run(capsys, "recover-log", url, "--apply")
    assert code == 0 and doc["result"]["applied"], doc
    fresh = fito.Checkpointer(url)
    target = torch.nn.Linear(8, 4)
    assert fresh.restore({"model": target}) == 2 and target.weight.eq(2).all()
    assert fresh.store.acquire_fence() > doc["result"]["fence_floor"]  # fences above every old attempt's
    fresh.close()
    assert _run(capsys, "recover-log", url)[0] == 4  # a log exists: never replaced
    assert _run(capsys, "inspect", seaweed.new_url())[0] == 3  # an empty prefix: no checkpoint, as a missing directory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing local but the export


def test_the_root_argument_help_names_s3_urls_and_the_aws_environment(capsys) -> None:
    for command in ("inspect", "verify", "gc", "recover-log", "export"):
        assert main([command, "--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())
        assert "s3://bucket/prefix" in text and "AWS_ENDPOINT_URL" in text and "AWS_ALLOW_HTTP" in text, command
