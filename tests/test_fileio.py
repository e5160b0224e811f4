"""Result files appear complete or not at all; a full disk says so and names the file."""

from __future__ import annotations

import errno
import os

import pytest

from impeccable import fileio
from impeccable.fileio import DiskFullError, write_atomic


def test_write_is_atomic_and_replaces(tmp_path):
    target = tmp_path / "sub" / "a.json"
    write_atomic(target, "one")
    write_atomic(target, b"two")
    assert target.read_text() == "two" and [p.name for p in target.parent.iterdir()] == ["a.json"]


def test_full_disk_names_the_file_and_leaves_no_partial_file(tmp_path, monkeypatch):
    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fileio.os, "write", full)
    target = tmp_path / "models" / "surrogate.r0.pt"
    with pytest.raises(DiskFullError, match=r"disk full: cannot write .*surrogate\.r0\.pt"):
        write_atomic(target, b"x" * 1000)
    assert list(target.parent.iterdir()) == []


def test_model_save_on_a_full_disk_says_disk_full(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from impeccable.stages import surrogate

    monkeypatch.setattr(fileio.os, "write", lambda fd, data: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    with pytest.raises(DiskFullError, match="disk full: cannot write .*m.pt"):
        surrogate._save_atomic(torch, {"w": torch.zeros(10)}, tmp_path / "m.pt")
