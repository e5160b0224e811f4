"""Result files appear complete or not at all; a full disk says so and names the file."""

from __future__ import annotations

import subprocess

import pytest

from impeccable.fileio import DiskFullError, write_atomic


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB file system (tmpfs), to fill for real (needs root, as CI has)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if (
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True).returncode
        != 0
    ):
        pytest.skip("cannot mount a tmpfs here (needs root): a full disk is not tested")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_write_is_atomic_and_replaces(tmp_path):
    target = tmp_path / "sub" / "a.json"
    write_atomic(target, "one")
    write_atomic(target, b"two")
    assert target.read_text() == "two" and [p.name for p in target.parent.iterdir()] == ["a.json"]


def test_full_disk_names_the_file_and_leaves_no_partial_file(tiny_disk):
    target = tiny_disk / "models" / "surrogate.r0.pt"
    with pytest.raises(DiskFullError, match=r"disk full: cannot write .*surrogate\.r0\.pt"):
        write_atomic(target, b"x" * 1_000_000)
    assert list(target.parent.iterdir()) == []


def test_model_save_on_a_full_disk_says_disk_full(tiny_disk):
    torch = pytest.importorskip("torch")
    from impeccable.stages import surrogate

    with pytest.raises(DiskFullError, match="disk full: cannot write .*m.pt"):
        surrogate._save_atomic(torch, {"w": torch.zeros(100_000)}, tiny_disk / "m.pt")
