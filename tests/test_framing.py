"""The dispatcher's non-blocking pipe end speaks multiprocessing.connection's wire format both ways."""

from __future__ import annotations

import os
import random
import selectors
import threading
from multiprocessing import Pipe

from impeccable.runtime.framing import FramedPipe


def test_frames_of_any_size_arrive_whole_and_in_order_however_they_are_split():
    ours, theirs = Pipe(duplex=True)
    pipe = FramedPipe(os.dup(ours.fileno()))
    ours.close()
    rng = random.Random(7)
    sent = [os.urandom(rng.choice([0, 1, 3, 4, 100, 16384, 16385, 70_000, 1 << 20])) for _ in range(60)]
    writer = threading.Thread(target=lambda: [theirs.send_bytes(m) for m in sent])
    writer.start()
    received: list[bytes] = []
    with selectors.DefaultSelector() as sel:
        sel.register(pipe.fd, selectors.EVENT_READ)
        while len(received) < len(sent):
            assert sel.select(timeout=10), "no data"
            received += pipe.read_frames()
    writer.join()
    assert received == sent
    theirs.close()
    assert pipe.read_frames() == [] and pipe.eof
    pipe.close()


def test_writes_never_block_and_flush_when_the_reader_catches_up():
    ours, theirs = Pipe(duplex=True)
    pipe = FramedPipe(os.dup(ours.fileno()))
    ours.close()
    big = [os.urandom(1 << 20) for _ in range(8)]  # far more than the socket buffer holds
    done = [pipe.write(m) for m in big]
    assert not all(done) and pipe.pending_output  # buffered, not blocked
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: [got.append(theirs.recv_bytes()) for _ in big])
    reader.start()
    with selectors.DefaultSelector() as sel:
        sel.register(pipe.fd, selectors.EVENT_WRITE)
        while not pipe.flush():
            assert sel.select(timeout=10), "the pipe never became writable"
    reader.join(30)
    assert got == big
    theirs.close()
    pipe.close()
