"""The srun backend's allocation holder, against a fake salloc (no Slurm needed)."""

from __future__ import annotations

import os
import stat
import time

from impeccable.runtime.backends.slurm.srun import SlurmAllocation


def fake(tmp_path, name, body):
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_granted_line_arriving_with_others_in_one_write(tmp_path, monkeypatch):
    """Regression: a buffered readline kept "Granted" in its buffer while select() waited for more (a hang)."""
    fake(
        tmp_path,
        "salloc",
        'printf "salloc: Pending job allocation 5\\nsalloc: job 5 queued and waiting for '
        'resources\\nsalloc: Granted job allocation 5\\n" >&2\nexec cat\n',
    )
    fake(tmp_path, "scancel", "exit 0\n")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    allocation = SlurmAllocation(cores=1, timeout_s=5)
    t0 = time.monotonic()
    assert allocation.acquire() == "5"
    assert time.monotonic() - t0 < 5
    allocation.release()
    assert allocation.owned is False


def test_refused_allocation_says_why(tmp_path, monkeypatch):
    fake(tmp_path, "salloc", 'echo "salloc: error: Invalid partition name specified" >&2\nexit 1\n')
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    try:
        SlurmAllocation(cores=2, timeout_s=5).acquire()
    except RuntimeError as exc:
        assert "could not get an allocation of 2 cores" in str(exc) and "Invalid partition name" in str(exc)
    else:
        raise AssertionError("expected a RuntimeError")
