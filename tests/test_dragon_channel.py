"""The Dragon channel's security needs only the standard library: it is tested where dragonhpc is not installed.

The socket and its folder are private, a peer with the wrong key is refused, and nothing a peer sends
before it has proved the key is ever unpickled.
"""

from __future__ import annotations

import os
import pickle
import socket
import stat
import threading
import time
from multiprocessing import AuthenticationError

import pytest

from impeccable.runtime.backends.dragon.channel import Channel, connect


def test_channel_is_private_and_refuses_a_wrong_key():
    channel = Channel()
    try:
        assert stat.S_IMODE(os.stat(channel.directory).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(channel.path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(channel.keyfile).st_mode) == 0o600
        outcome: dict[str, object] = {}

        def intruder_then_server():
            try:
                connect(channel.path, os.urandom(32))
            except AuthenticationError as exc:
                outcome["intruder"] = exc
            outcome["server"] = connect(channel.path, channel.key)

        thread = threading.Thread(target=intruder_then_server)
        thread.start()
        conn = channel.accept(timeout_s=10)
        thread.join(10)
        assert isinstance(outcome.get("intruder"), AuthenticationError)  # refused
        conn.send_bytes(b"hello")
        assert outcome["server"].recv_bytes() == b"hello"  # the right key got in
        assert not os.path.exists(channel.path)  # and nobody else can connect any more
        conn.close()
        outcome["server"].close()
    finally:
        channel.remove()
    assert not os.path.exists(channel.directory)


class _Marker:
    def __reduce__(self):
        return (open, (MARKER_PATH, "w"))


MARKER_PATH = ""


def test_payload_from_an_unauthenticated_peer_is_never_unpickled(tmp_path):
    global MARKER_PATH
    MARKER_PATH = str(tmp_path / "unpickled")
    payload = pickle.dumps(_Marker())
    channel = Channel()
    try:

        def raw_peer():
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.connect(channel.path)
                for _ in range(3):  # a length-prefixed pickle where the handshake expects a digest
                    sock.sendall(len(payload).to_bytes(4, "big") + payload)
                time.sleep(0.5)

        thread = threading.Thread(target=raw_peer)
        thread.start()
        with pytest.raises(TimeoutError):
            channel.accept(timeout_s=2)
        thread.join(10)
    finally:
        channel.remove()
    assert not os.path.exists(MARKER_PATH)
