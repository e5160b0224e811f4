"""One live run per run directory; status tells a live run from a killed one; reading commands on a read-only copy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from impeccable.cli import main
from impeccable.lock import RunDirBusy, RunDirLock, live_holder
from impeccable.results import sessions_with_liveness
from impeccable.store import DockRow, Store

ROOT = Path(__file__).resolve().parent.parent
HOLD = "import sys, time; from impeccable.lock import RunDirLock; RunDirLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(600)"


def hold(run_dir: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_is_refused_naming_the_live_process_and_a_stale_lock_is_taken_over(tmp_path):
    holder = hold(tmp_path)
    try:
        with pytest.raises(
            RunDirBusy, match=rf"another `impeccable run` is using this run directory \(pid {holder.pid} on "
        ):
            RunDirLock(tmp_path).acquire()
        assert live_holder(tmp_path)["pid"] == holder.pid
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert live_holder(tmp_path) is None  # the kernel dropped the killed run's lock
    with RunDirLock(tmp_path):
        assert live_holder(tmp_path)["pid"] == os.getpid()


def test_impeccable_run_refuses_a_run_directory_in_use(tmp_path, capsys):
    run_dir = tmp_path / "run"
    holder = hold(run_dir)
    try:
        code = main(["run", str(ROOT / "campaigns" / "demo.toml"), "--run-dir", str(run_dir), "--no-progress"])
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err
    assert code == 2 and f"pid {holder.pid}" in err and "another `impeccable run`" in err


def test_status_tells_a_killed_session_from_a_live_one(tmp_path):
    store = Store(tmp_path / "campaign.db")
    store.begin_session(2, {"executable": "local", "function": "local"})
    assert sessions_with_liveness(store, tmp_path)[-1]["status"].startswith("killed")
    holder = hold(tmp_path)
    try:
        assert sessions_with_liveness(store, tmp_path)[-1]["status"].startswith(f"running (pid {holder.pid} on ")
    finally:
        holder.kill()
        holder.wait()


@pytest.fixture
def read_only_run(tmp_path):
    """A finished run directory bind-mounted read-only (needs root or CAP_SYS_ADMIN)."""
    source = tmp_path / "src"
    store = Store(source / "campaign.db")
    session = store.begin_session(2, {"executable": "local", "function": "local"})
    store.set_meta("name", "ro")
    store.add_docking([DockRow("a", "CCO", 0, "seed", -5.0, None, None)], "t")
    store.end_session(session, "done")
    store.close()
    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "--bind", str(source), str(mount)], capture_output=True).returncode != 0:
        pytest.skip("cannot bind-mount here (needs root): read-only mount not tested")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mount)], check=True, capture_output=True)
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)
            pytest.fail("the read-only mount was still busy: a reading command left the store open")


def test_reading_commands_work_on_a_read_only_run(read_only_run, tmp_path, capsys):
    with pytest.raises(OSError):
        (read_only_run / "probe").write_text("x")
    assert main(["status", str(read_only_run)]) == 0
    assert main(["report", str(read_only_run), "--out", str(tmp_path / "out" / "r.html")]) == 0
    assert main(["export", str(read_only_run), "--out", str(tmp_path / "exp")]) == 0
    assert (tmp_path / "exp" / "hits.csv").read_text().count("\n") == 2
    assert "error" not in capsys.readouterr().err


def test_run_on_a_read_only_run_directory_says_so(read_only_run, capsys):
    code = main(["run", str(ROOT / "campaigns" / "demo.toml"), "--run-dir", str(read_only_run), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "the run directory is read-only" in err and "--run-dir" in err, err
