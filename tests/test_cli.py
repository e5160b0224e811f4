"""The command line: version, bench with JSON output, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import impeccable
from impeccable.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "impeccable.cli", *args], capture_output=True, text=True, timeout=300)


def test_version(capsys):
    assert main(["version"]) in (0, None)
    assert impeccable.__version__ in capsys.readouterr().out


def test_bench_writes_comparable_json(tmp_path):
    out = tmp_path / "bench.json"
    for workload in ("null-exec", "null-func"):
        proc = run_cli(
            "bench", "--workload", workload, "--tasks", "200", "--cores", "2", "--repeat", "1", "--json", str(out)
        )
        assert proc.returncode == 0, proc.stderr
        data = json.loads(out.read_text())
        for key in (
            "backend",
            "workload",
            "tasks",
            "cores",
            "throughput_tasks_per_s",
            "raw_throughput_tasks_per_s",
            "ratio_to_raw",
            "utilization",
            "makespan_s",
            "machine",
        ):
            assert key in data, key
        assert data["workload"] == workload and data["done"] == 200 and data["ratio_to_raw"] > 0
        # CPU accounting says whether the machine or the design bounds throughput
        assert data["pilot_cpu_per_task_ms"] > 0 and 0 < data["machine_cpu_busy"] <= 1.05
        if workload == "null-exec":  # each task is a child process: its CPU is counted
            assert data["child_cpu_per_task_ms"] > 0


def test_errors_are_one_line_without_traceback(tmp_path):
    proc = run_cli("bench", "--tasks", "0")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error:") and len(proc.stderr.strip().splitlines()) == 1
