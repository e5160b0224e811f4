"""``impeccable compare``: the pilot against the srun baseline on one tiny real campaign, and the explanation."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from test_campaign_run import ROOT, tiny

from impeccable.runtime.backends.slurm.local import start as start_cluster
from impeccable.sidebyside import busy_core_seconds, explain


def figures(makespan: float, utilization: float, stages: list[tuple[str, float, float]]) -> dict:
    return {
        "makespan_s": makespan,
        "utilization": utilization,
        "cores": 2,
        "launch_overhead_median_s": 0.01,
        "stages": [{"stage": s, "core_s": c, "median_runtime_s": r} for s, c, r in stages],
    }


def test_explanation_splits_the_ratio_into_work_and_idle_factors():
    pilot = figures(100.0, 0.95, [("dock", 150.0, 30.0), ("infer", 40.0, 2.0)])
    srun = figures(160.0, 0.80, [("dock", 150.0, 30.0), ("infer", 106.0, 6.0)])
    result = {"baseline": "srun", "pilot": pilot, "srun": srun, "makespan_ratio": 100.0 / 160.0}
    text = explain(result)
    assert busy_core_seconds(pilot) == 190.0
    work, idle = (190.0 / 256.0), (0.80 / 0.95)
    assert f"work factor of {work:.2f}" in text and f"idle factor of {idle:.2f}" in text
    # the stage that makes the difference comes first
    assert text.index("infer 40 vs 106 core-s") < text.index("dock 150 vs 150 core-s")


@pytest.mark.slow
def test_compare_tiny_campaign_against_srun(tmp_path):
    """Both sides of a tiny campaign (docking, training, inference; no MD, which test_campaign_run covers): the
    same docking scores, each side on its own routes, the side-by-side report."""
    cluster = start_cluster()
    if not cluster.ok:
        pytest.skip(f"no Slurm cluster: {cluster.reason}")
    try:
        out, data = tmp_path / "cmp", tmp_path / "cmp.json"
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "impeccable.cli",
                "compare",
                str(tiny(tmp_path, limit=80, top_m=0)),
                "--baseline",
                "srun",
                "--out",
                str(out),
                "--json",
                str(data),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=1200,
        )
    finally:
        cluster.stop()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(data.read_text())
    assert result["docking_scores_agree"] and result["docked_compounds"]["common"] == 13
    assert result["pilot"]["routes"] == {"executable": "local", "function": "local"}
    assert result["srun"]["routes"] == {"executable": "srun", "function": "srun"}
    assert result["pilot"]["failed"] == 0 and result["srun"]["failed"] == 0
    assert result["makespan_ratio"] == pytest.approx(result["pilot"]["makespan_s"] / result["srun"]["makespan_s"])
    report = (out / "compare.html").read_text()
    assert "Where the time goes" in report and "work factor" in report and report.count("<img") >= 4


def test_no_slurm_says_what_to_do_instead(monkeypatch, capsys):
    from impeccable.cli import main
    from impeccable.runtime import backends

    monkeypatch.setattr(
        backends,
        "is_available",
        lambda name: (False, "no Slurm cluster answers (sinfo: resolve_ctls_from_dns_srv: res_nsearch error)"),
    )
    assert main(["compare", str(ROOT / "campaigns" / "demo.toml"), "--baseline", "srun"]) == 2
    err = capsys.readouterr().err
    assert "inside a Slurm allocation" in err and "--local-slurm" in err
