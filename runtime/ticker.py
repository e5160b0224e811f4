"""A daemon thread that looks at something every few seconds until stopped: the node watch and the stall watch."""

from __future__ import annotations

import threading


class Ticker:
    """Calls ``tick()`` every ``period_s`` on a daemon thread between ``start()`` and ``stop()``.

    The wait is an event's, so ``stop()`` ends it at once rather than after a period; ``join_timeout_s``
    bounds how long ``stop()`` waits for a tick in progress (None: as long as it takes)."""

    def __init__(self, name: str, period_s: float, join_timeout_s: float | None = None) -> None:
        self._name = name
        self._period_s = period_s
        self._join_timeout_s = join_timeout_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._join_timeout_s)

    def tick(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.wait(self._period_s):
            self.tick()
