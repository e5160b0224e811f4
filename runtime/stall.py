"""The pilot's stall watchdog: defence in depth against a lost wake-up, never a substitute for one.

The slot pool wakes every runtime with pending work whenever slots are given
back (:mod:`.slots`), so a runtime never waits for a wake-up that does not come.
Should a future bug break that, the watchdog notices and says so, instead of a
campaign holding a whole allocation idle. It runs beside the dispatchers (a
timer thread; nothing on the dispatch path waits for it) and, once the pool has
seen no activity (no take, no give-back, no submission) for ``after_s`` seconds
while some runtime has pending work:

1. it wakes every runtime (a probe). A scheduling pass that begins with
   nothing else having happened since and places a task proves that the
   runtime had missed a wake-up: a :class:`StallEvent` of kind ``"stall"``
   with the pool's state as it was before the probe;
2. if, ``after_s`` later, still nothing has happened and a runtime holding no
   slots has a pending task that fits the free slots and no other runtime's
   claim ranks before it, nothing will ever wake it: an event of kind
   ``"stuck"`` (a benchmark stops on it with the dump instead of hanging).

Events go to :data:`RECORDED` (the test suite fails a test that leaves one)
and to the pilot's ``on_stall`` callback (a campaign stores them in its run).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .slots import SlotBroker
from .ticker import Ticker

DEFAULT_AFTER_S = 5.0


@dataclass(frozen=True)
class StallEvent:
    """A runtime had work that fitted free slots and nothing was happening."""

    kind: str  # "stall": a probe's wake-up placed a task (a lost wake-up); "stuck": nothing can wake it
    runtime: str
    when: float
    idle_s: float  # how long the pool had seen no activity
    state: dict = field(default_factory=dict)  # the pool: per runtime pending/wanted/held/claim; free slots

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        views = "; ".join(
            f"{v['runtime']}: {v['pending']} pending, holds {v['held_cores']} cores"
            f"{', waiting for slots' if v['waiting_for_slots'] else ''}"
            f"{', could place now' if v['could_place_now'] else ''}"
            for v in self.state.get("views", ())
        )
        return (
            f"{self.kind} in runtime {self.runtime!r} after {self.idle_s:.1f} s without activity "
            f"(free cores per node {self.state.get('free_cores_per_node')}; {views})"
        )


RECORDED: list[StallEvent] = []  # every event in this process (tests fail on any)


class StallWatch(Ticker):
    """A timer thread watching the pilot's slot pools for stalls (see the module docstring)."""

    def __init__(
        self,
        brokers: Sequence[SlotBroker],
        after_s: float = DEFAULT_AFTER_S,
        on_event: Callable[[StallEvent], None] | None = None,
        pending: Callable[[], bool] | None = None,
    ) -> None:
        """``pending``: whether the caller has tasks not started yet, independent of the pool's own
        bookkeeping (the pilot looks at its records), so a runtime that never told the pool is seen."""
        if after_s <= 0:
            raise ValueError(f"the stall watchdog's after_s must be > 0, got {after_s}")
        super().__init__("impeccable-stall-watch", after_s / 2)
        self.brokers = list(brokers)
        self.after_s = after_s
        self.on_event = on_event
        self.pending = pending
        self.events: list[StallEvent] = []
        self._lock = threading.Lock()
        self._seen: dict[int, tuple[int, float, bool]] = {}  # broker -> (activity, since, probed)
        for broker in self.brokers:
            broker.on_stall = self._stalled

    def stop(self) -> None:
        super().stop()
        for broker in self.brokers:
            broker.on_stall = None

    @property
    def stuck(self) -> bool:
        return any(e.kind == "stuck" for e in self.events)

    def tick(self) -> None:
        for broker in self.brokers:
            self.check(broker, time.monotonic())

    def check(self, broker: SlotBroker, now: float) -> None:
        """One look at ``broker`` (the thread calls it every ``after_s / 2``; tests call it directly)."""
        activity, since, probed = self._seen.get(id(broker), (-1, now, False))
        if broker.activity != activity:
            self._seen[id(broker)] = (broker.activity, now, False)
            return
        idle = now - since
        if idle < self.after_s:
            return
        if not broker.has_pending_work() and not (self.pending is not None and self.pending()):
            return
        if not probed:
            broker.probe()
            self._seen[id(broker)] = (activity, since, True)
            return
        if self.stuck:
            return
        state = broker.state()
        for view in state["views"]:
            if view["pending"] and view["could_place_now"] and view["held_cores"] == 0:
                self._record(StallEvent("stuck", view["runtime"], time.time(), idle, state))
                broker.probe()
                return

    def _stalled(self, runtime: str, state: dict) -> None:
        """From the broker: a pass woken only by the probe placed a task."""
        self._record(StallEvent("stall", runtime, time.time(), self.after_s, state))

    def _record(self, event: StallEvent) -> None:
        with self._lock:
            self.events.append(event)
            RECORDED.append(event)
        if self.on_event is not None:
            self.on_event(event)
