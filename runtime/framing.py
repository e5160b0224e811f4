"""Non-blocking, buffered ends of a ``multiprocessing.connection`` pipe, for an event loop.

A dispatcher thread that serves many workers must never block on one of them.
``Connection.recv_bytes`` costs two system calls per message and
``Connection.send_bytes`` blocks when the pipe is full; if the worker is
itself blocked sending a large result, both sides wait forever. This end
speaks the same wire format (a 4-byte big-endian length, or -1 and an 8-byte
length, then the payload), so the worker keeps using a plain blocking
``Connection``; but it reads everything that is waiting in one call and
buffers what the pipe cannot take yet, for the loop to flush when the pipe
is writable again.
"""

from __future__ import annotations

import os
import struct

READ_CHUNK = 1 << 18
_SMALL = struct.Struct("!i")
_LARGE = struct.Struct("!Q")


class FramedPipe:
    """The dispatcher's end of one worker's pipe; owns ``fd`` (closed by :meth:`close`)."""

    __slots__ = ("fd", "_in", "_out", "eof")

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self._in = bytearray()
        self._out = bytearray()
        self.eof = False

    def read_frames(self) -> list[bytes]:
        """Every complete message waiting in the pipe; sets :attr:`eof` when the other end is gone."""
        buffer = self._in
        while True:
            try:
                chunk = os.read(self.fd, READ_CHUNK)
            except BlockingIOError:
                break
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            if not chunk:
                self.eof = True
                break
            buffer += chunk
            if len(chunk) < READ_CHUNK:
                break
        frames: list[bytes] = []
        pos, end = 0, len(buffer)
        while end - pos >= 4:
            (size,) = _SMALL.unpack_from(buffer, pos)
            start = pos + 4
            if size == -1:
                if end - start < 8:
                    break
                (size,) = _LARGE.unpack_from(buffer, start)
                start += 8
            if end - start < size:
                break
            frames.append(bytes(buffer[start : start + size]))
            pos = start + size
        if pos:
            del buffer[:pos]
        return frames

    def write(self, payload: bytes) -> bool:
        """Queue one message and send what the pipe takes; False while some is still buffered."""
        size = len(payload)
        if size > 0x7FFFFFFF:
            self._out += _SMALL.pack(-1) + _LARGE.pack(size)
        else:
            self._out += _SMALL.pack(size)
        self._out += payload
        return self.flush()

    @property
    def pending_output(self) -> bool:
        return bool(self._out)

    def flush(self) -> bool:
        """Send buffered output; True when all of it has left. A closed pipe drops it (EOF follows)."""
        out = self._out
        while out:
            try:
                sent = os.write(self.fd, out)
            except BlockingIOError:
                return False
            except (BrokenPipeError, ConnectionResetError):
                out.clear()
                return True
            del out[:sent]
        return True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
