"""One scheduling pass over a runtime's queue: the admission core of every runtime.

The local dispatcher (:mod:`.loop`, which serves the local, Dragon and srun
backends) and each Flux partition's reactor (:mod:`.flux.reactor`) admit their
queued tasks through :func:`admit`, so both follow the same protocol with the
pilot's slot pool (:mod:`..slots`): a pass begins (the runtime is hungry from
then on, woken by every slot another runtime gives back), tasks are placed in
order with backfill behind one that does not fit, and the pass ends with how
many tasks are left and the smallest request among those it skipped (what the
stall watchdog checks against the free slots).

A runtime must run a pass after each of its own events (a task ended, a
worker came back, a submission arrived): its own give-backs outside a pass do
not wake it. The loop turn and the reactor's callbacks do so by construction.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

from ..slots import SlotView, task_processes
from .base import Submission

# a pending task is looked at most this far down the queue when the head does not fit (backfill window)
BACKFILL_WINDOW = 256


def admit(
    queue: collections.deque[Submission],
    place: Callable[[Submission], bool],
    slots: SlotView,
    has_room: Callable[[], bool],
    can_use_slots: Callable[[Submission], bool] | None = None,
    window: int = BACKFILL_WINDOW,
) -> None:
    """Place queued tasks in order (``place`` takes slots and starts or hands over the task, False when
    it cannot now); one that does not fit lets the ones behind it go, up to ``window`` looked at, and
    the scan stops early once ``has_room()`` says not even a one-core task could be placed.

    The runtime keeps its claim on slots (other runtimes are held off for it) only if a task it skipped
    could use slots if it got them (``can_use_slots``: e.g. a function pool with an idle worker left at
    the end of the pass): a claim that no slot could satisfy would hold everyone off until the
    runtime's next event."""
    if not queue:
        slots.schedule_pass_ends(0)  # nothing to place: no claim, no hunger (cheap when there was none)
        return
    slots.schedule_pass_begins()
    skipped: list[Submission] = []
    for _ in range(min(len(queue), window)):
        sub = queue.popleft()
        if not place(sub):
            skipped.append(sub)
            if not has_room():
                break
    if skipped:
        queue.extendleft(reversed(skipped))
    usable = skipped if can_use_slots is None else [sub for sub in skipped if can_use_slots(sub)]
    slots.schedule_pass_ends(len(queue), smallest_request(usable), claim=bool(usable))


def smallest_request(skipped: list[Submission]) -> list[tuple[int, int]] | None:
    """The processes ((cores, GPUs) each) of the task with the fewest cores a pass could not place."""
    if not skipped:
        return None
    task = min((sub.task for sub in skipped), key=lambda t: (t.cores, t.gpus))
    return task_processes(task.ranks, task.cores_per_rank, task.gpus_per_rank, task.mpi)
