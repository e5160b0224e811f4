"""The private channel between the pilot and its Dragon runtime (standard library only).

* an AF_UNIX socket in a fresh 0700 directory (socket 0600), never a TCP port;
* the server must answer the pilot's HMAC challenge with a 32-byte random key
  (``os.urandom``) that it reads from a 0600 file in that directory and
  deletes; it also checks the pilot's. A peer that fails the handshake is
  dropped before a single payload byte of it is unpickled, and once the
  server is in, the socket file is removed: nobody else can connect.

Nothing here imports Dragon, so the security properties are tested anywhere.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import tempfile
import time
from multiprocessing.connection import Connection, answer_challenge, deliver_challenge
from typing import Any

HANDSHAKE_TIMEOUT_S = 5.0


class Channel:
    """The pilot's end: a listening AF_UNIX socket in a private directory, and the key."""

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="impeccable-dragon-")  # 0700
        os.chmod(self.directory, 0o700)
        self.path = os.path.join(self.directory, "channel.sock")
        self.keyfile = os.path.join(self.directory, "key")
        self.key = os.urandom(32)
        fd = os.open(self.keyfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(self.key)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        os.chmod(self.path, 0o600)
        self.sock.listen(4)

    def accept(self, timeout_s: float, alive: Any = lambda: True) -> Connection:
        """The first peer that passes the handshake; peers with another key are dropped unread.

        Raises TimeoutError after ``timeout_s``, or RuntimeError when ``alive()`` turns false.
        """
        deadline = time.monotonic() + timeout_s
        self.sock.settimeout(0.2)
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no authenticated peer on {self.path} within {timeout_s:g} s")
            if not alive():
                raise RuntimeError(
                    "the Dragon runtime exited (or its launcher reported a failed start) before it connected"
                )
            try:
                peer, _ = self.sock.accept()
            except TimeoutError:
                continue
            conn = self._authenticate(peer)
            if conn is not None:
                self.close_listener()
                return conn

    def _authenticate(self, peer: socket.socket) -> Connection | None:
        peer.setblocking(True)
        # a peer that stalls mid-handshake is dropped after HANDSHAKE_TIMEOUT_S
        timeval = struct.pack("ll", int(HANDSHAKE_TIMEOUT_S), 0)
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        conn = Connection(peer.detach())
        try:
            deliver_challenge(conn, self.key)
            answer_challenge(conn, self.key)
        except Exception:  # noqa: BLE001 - wrong key, garbage, EOF or stall: refuse this peer
            conn.close()
            return None
        sock = socket.socket(fileno=os.dup(conn.fileno()))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 0))
        sock.close()
        return conn

    def close_listener(self) -> None:
        if self.sock.fileno() >= 0:
            self.sock.close()
        for path in (self.path, self.keyfile):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def remove(self) -> None:
        self.close_listener()
        shutil.rmtree(self.directory, ignore_errors=True)


def connect(path: str, key: bytes) -> Connection:
    """The server's end (also used by tests): raises AuthenticationError for a wrong key.

    Built from the socket up, as ``multiprocessing.connection.Client``, because
    Dragon replaces ``Client`` inside its runtime.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    conn = Connection(sock.detach())
    try:
        answer_challenge(conn, key)
        deliver_challenge(conn, key)
    except BaseException:
        conn.close()
        raise
    return conn
