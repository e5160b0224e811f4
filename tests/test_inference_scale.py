"""The inference stage at 200,000 compounds, through the real campaign runner: every compound accounted for,
and the manager's memory does not grow with the library (it streams: batches in flight, not rows)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from impeccable.inferbench import repeat_library, train_model
from impeccable.store import Store

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def bench(library: Path, run_dir: Path, model: Path) -> dict:
    """One inference stage in a fresh process, so that its peak memory is its own."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "impeccable.inferbench",
            "--library",
            str(library),
            "--run-dir",
            str(run_dir),
            "--model",
            str(model),
            "--batch-size",
            "10000",
            "--top-k",
            "300",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return json.loads(out.stdout)


def test_inference_over_200k_compounds_streams_in_bounded_memory(tmp_path):
    source = ROOT / "data" / "library" / "moses_20k.csv"
    model = train_model(tmp_path / "model.pt", epochs=3)
    small = bench(repeat_library(source, 50_000, tmp_path / "lib50k.csv.gz"), tmp_path / "r50k", model)
    large = bench(repeat_library(source, 200_000, tmp_path / "lib200k.csv.gz"), tmp_path / "r200k", model)
    print(f"\n50k: {small}\n200k: {large}")
    assert (small["compounds"], large["compounds"]) == (50_000, 200_000)
    assert large["scored"] == 200_000 and large["batches"] == 20
    growth = large["manager_peak_rss_mib"] / small["manager_peak_rss_mib"]
    assert growth < 1.2, f"manager peak memory grew {growth:.2f}x from 50k to 200k compounds"
    assert large["manager_peak_rss_mib"] < 1024 and large["worker_peak_rss_mib"] < 1024
    store = Store.open_existing(tmp_path / "r200k", readonly=True)
    try:
        nominees = store.selected_compounds(0, "redock")
        assert len(nominees) == 300 and all(smiles and score < 0 for _, smiles, score in nominees)
        assert len(store.prediction_scores(0)) == 200_000
    finally:
        store.close()


def test_peak_memory_is_the_process_own_not_its_parents():
    """ru_maxrss survives fork and exec on Linux: a bench started by a 3.3 GB test runner reported 3.3 GB as its
    own peak. A parent holding 600 MiB starts a child that reads its own peak: far below."""
    child = "from impeccable.inferbench import _peak_rss_self; print(_peak_rss_self())"
    parent = (
        "import subprocess, sys; ballast = bytearray(600 << 20); ballast[::4096] = b'x' * len(ballast[::4096]); "
        f"print(subprocess.run([sys.executable, '-c', {child!r}], capture_output=True, text=True, check=True).stdout)"
    )
    peak = int(subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, check=True).stdout)
    assert peak < 300 << 20
