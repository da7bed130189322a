"""Pinned results of the fleet-update simulation (§7, §9.2, THEORY.md correction 10)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fito.cli import main
from fito.model.fleet import MODES, simulate


@pytest.mark.parametrize("loss", [0.05, 0.3])
def test_naive_mixes_tagged_and_consensus_never_do(loss: float) -> None:
    r = {m: simulate(m, nodes=32, loss=loss, runs=300, seed=7) for m in MODES}
    assert r["naive"].mixed.sum() > 0 and (r["naive"].mixed > 0).mean() > 0.5
    assert r["consensus-nofence"].mixed.sum() > 0  # agreement on the decision alone is not enough
    assert r["tagged"].mixed.sum() == 0 and r["consensus"].mixed.sum() == 0
    # tagging pays in aborted collectives exactly where naive would have mixed
    assert r["tagged"].aborted.sum() > 0 and r["naive"].aborted.sum() == 0
    assert r["consensus"].fenced.sum() > 0  # nodes that had not observed were refused
    for res in r.values():
        assert (res.converge >= 1).all()


def test_no_loss_means_no_window() -> None:
    for m in MODES:
        res = simulate(m, nodes=16, loss=0.0, runs=20)
        assert res.mixed.sum() == 0
    assert (simulate("naive", nodes=16, loss=0.0, runs=20).converge == 1).all()


def test_more_loss_means_longer_mixed_window() -> None:
    lo = simulate("naive", nodes=64, loss=0.02, runs=400, seed=1).mixed.mean()
    hi = simulate("naive", nodes=64, loss=0.3, runs=400, seed=1).mixed.mean()
    assert hi > 2 * lo


def test_seeded_runs_repeat() -> None:
    a = simulate("consensus", nodes=8, loss=0.2, runs=50, seed=3)
    b = simulate("consensus", nodes=8, loss=0.2, runs=50, seed=3)
    assert np.array_equal(a.converge, b.converge) and np.array_equal(a.aborted, b.aborted)


def test_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        simulate("gossip", nodes=4, loss=0.1, runs=1)
    with pytest.raises(ValueError):
        simulate("naive", nodes=4, loss=1.0, runs=1)


def test_cli_json_and_plot(tmp_path, capsys) -> None:
    png = tmp_path / "fleet.png"
    assert main(["fleet", "--nodes", "16", "--loss", "0.05,0.2", "--runs", "100", "--json", "--plot", str(png)]) == 0
    out = json.loads(capsys.readouterr().out)["result"]
    by = {(r["mode"], r["loss"]): r for r in out["results"]}
    assert len(by) == 2 * len(MODES)
    assert by[("naive", 0.2)]["runs_with_mixed"] > 0
    assert by[("tagged", 0.2)]["runs_with_mixed"] == 0 and by[("consensus", 0.2)]["runs_with_mixed"] == 0
    assert png.stat().st_size > 1000


def test_cli_table(capsys) -> None:
    assert main(["fleet", "--nodes", "8", "--loss", "0.1", "--runs", "50", "--mode", "tagged"]) == 0
    text = capsys.readouterr().out
    assert "tagged" in text and "naive" not in text.split("mixed =")[0]


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=30, deadline=None)
@given(nodes=st.integers(1, 40), loss=st.floats(0.0, 0.6), seed=st.integers(0, 10**6))
def test_tags_and_fencing_never_mix_for_any_parameters(nodes: int, loss: float, seed: int) -> None:
    for mode in ("tagged", "consensus"):
        res = simulate(mode, nodes=nodes, loss=loss, runs=20, seed=seed)
        assert res.mixed.sum() == 0
        assert (res.converge >= 1).all()
    naive = simulate("naive", nodes=nodes, loss=loss, runs=20, seed=seed)
    tagged = simulate("tagged", nodes=nodes, loss=loss, runs=20, seed=seed)
    # same seed, same broadcast: tagging aborts exactly the collectives naive lets run mixed
    assert (tagged.aborted == naive.mixed).all()
