"""Start-up work that shares a machine's real cores: the model's contention term for srun steps.

An emulation advertises hundreds of cores on a machine that has two. Its tasks are sleeps and cost no
CPU, but every srun step does: ``srun`` itself, the step's RPCs to ``slurmctld`` and ``slurmd``,
``slurmstepd``, and for a function task a fresh interpreter importing torch and RDKit. When hundreds
of steps start at once they share the real cores, and each starts later than it would alone. The
model charged each step only its own cost and missed the srun side by 21-43 % at 256-512 emulated
cores (docs/performance.md).

:class:`SharedCores` is a processor-sharing queue: each starting step has some CPU seconds of work
(measured alone, uncontended), and the ``n`` steps starting at one time each advance at
``min(1, real_cores / n)`` CPU-seconds per second; a step's payload begins when its work is done. On a
real allocation every step starts on cores of its own, so predictions at scale use no shared cores.
"""

from __future__ import annotations

import math
from typing import Generic, TypeVar

Item = TypeVar("Item")


class SharedCores(Generic[Item]):
    """Items doing CPU work on ``real_cores`` cores under processor sharing, on the caller's clock.

    The caller tells it the time of each change (:meth:`add`), asks when the next item completes
    (:meth:`next_done`) and collects the items done by a time (:meth:`done_by`); times never go back."""

    def __init__(self, real_cores: float) -> None:
        if real_cores <= 0:
            raise ValueError(f"real_cores must be > 0, got {real_cores}")
        self.real_cores = real_cores
        self._left: dict[int, tuple[float, Item]] = {}  # key -> (CPU seconds left, item)
        self._keys = 0
        self._at = 0.0  # the time the work left was last brought up to

    def __len__(self) -> int:
        return len(self._left)

    def _rate(self) -> float:
        return min(1.0, self.real_cores / len(self._left)) if self._left else 1.0

    def _advance(self, now: float) -> None:
        if now < self._at - 1e-9:
            raise ValueError(f"shared cores: time went back from {self._at} to {now}")
        done = (now - self._at) * self._rate()
        if done > 0:
            self._left = {k: (left - done, item) for k, (left, item) in self._left.items()}
        self._at = max(self._at, now)

    def add(self, now: float, work_s: float, item: Item) -> None:
        """``item`` begins ``work_s`` CPU seconds of work at ``now``."""
        self._advance(now)
        self._left[self._keys] = (max(0.0, work_s), item)
        self._keys += 1

    def next_done(self) -> float:
        """When the next item completes if nothing else begins (inf when none works)."""
        if not self._left:
            return math.inf
        return self._at + min(left for left, _ in self._left.values()) / self._rate()

    def done_by(self, now: float) -> list[Item]:
        """The items whose work is done at ``now``, in the order they began; they leave the queue."""
        self._advance(now)
        finished = [k for k, (left, _) in self._left.items() if left <= 1e-9]
        return [self._left.pop(k)[1] for k in finished]


def core_shares(intervals: list[tuple[float, float]], real_cores: float) -> list[float]:
    """For each (start, end), the CPU seconds it could have had under processor sharing with the others: the
    integral over its life of ``min(1, real_cores / n)``, ``n`` the intervals alive at each instant. From a
    run's records this is the start-up work its steps did under that run's load (see the model's calibration)."""
    events = sorted({t for interval in intervals for t in interval})
    alive = dict.fromkeys(events, 0)
    for start, end in intervals:
        alive[start] += 1
        alive[end] -= 1
    cumulative, n, total = {}, 0, 0.0  # cumulative[t]: the integral of min(1, R/n) from the first event to t
    for t, after in zip(events, events[1:] + events[-1:]):
        cumulative[t] = total
        n += alive[t]
        if n > 0:
            total += (after - t) * min(1.0, real_cores / n)
    return [cumulative[end] - cumulative[start] for start, end in intervals]
