"""The pilot's stall watchdog: a lost wake-up is reported with the pool's state, and recovered."""

from __future__ import annotations

import concurrent.futures
import time

import pytest

from impeccable.runtime import Allocation, Pilot, TaskState, backend_class, executable_task, function_task, probes
from impeccable.runtime.slots import SlotBroker
from impeccable.runtime.stall import StallWatch

pytestmark = pytest.mark.expects_stall


def _starved_runtime(broker: SlotBroker):
    """``fn`` wants one core; ``exe`` held all of them and gave them back without waking ``fn``."""
    exe, fn = broker.view("exe"), broker.view("fn")
    held = exe.take(broker.capacity_cores)
    fn.schedule_pass_begins()
    assert fn.take(1) is None
    fn.schedule_pass_ends(1, [(1, 0)])
    fn.wake = None  # a regression: the give-back reaches nobody
    exe.give_back(*held)
    return exe, fn


def test_a_probe_that_unblocks_a_runtime_is_reported_as_a_stall_with_the_pool_state():
    broker = SlotBroker(Allocation(cores=2))
    exe, fn = _starved_runtime(broker)
    placed = []

    def pass_of_fn() -> None:  # what the runtime does when woken: a pass that places its task
        fn.schedule_pass_begins()
        placed.append(fn.take(1))
        fn.schedule_pass_ends(0)

    fn.wake = pass_of_fn
    watch = StallWatch([broker], after_s=5.0)
    watch.check(broker, now=100.0)  # first look: remembers the activity count
    watch.check(broker, now=103.0)  # not long enough
    assert not placed and not watch.events
    watch.check(broker, now=106.0)  # 6 s without activity, work pending: probe (wakes everyone)
    assert placed and placed[0] is not None
    [event] = watch.events
    assert event.kind == "stall" and event.runtime == "fn"
    fn_state = next(v for v in event.state["views"] if v["runtime"] == "fn")
    assert fn_state["pending"] == 1 and fn_state["could_place_now"] and event.state["free_cores_per_node"] == [2]
    assert "fn" in event.describe()


def test_a_runtime_nothing_can_wake_is_reported_stuck():
    broker = SlotBroker(Allocation(cores=2))
    exe, fn = _starved_runtime(broker)
    fn.wake = lambda: None  # woken, it does nothing: broken beyond a lost wake-up
    watch = StallWatch([broker], after_s=5.0)
    for now in (100.0, 106.0, 108.0, 112.0):
        watch.check(broker, now)
    assert [e.kind for e in watch.events] == ["stuck"]
    assert watch.stuck


def test_a_runtime_waiting_for_another_ones_claim_is_not_a_stall():
    """A wide task waits for a whole node while one-core work of another runtime waits behind its claim:
    the policy, not a stall."""
    broker = SlotBroker(Allocation.emulated(4, nodes=1))
    wide, small = broker.view("wide"), broker.view("small")
    busy = small.take(1)
    wide.schedule_pass_begins()
    assert wide.place([(4, 0)]) is None
    wide.schedule_pass_ends(1, [(4, 0)])
    small.schedule_pass_begins()
    assert small.take(1) is None  # held off: the free cores are kept for the wide task
    small.schedule_pass_ends(1, [(1, 0)])
    wide.wake = small.wake = lambda: None
    watch = StallWatch([broker], after_s=5.0)
    for now in (0.0, 6.0, 12.0, 18.0):
        watch.check(broker, now)
    assert watch.events == []
    assert busy is not None


def test_an_idle_pool_is_not_a_stall():
    broker = SlotBroker(Allocation(cores=2))
    broker.view("exe")
    watch = StallWatch([broker], after_s=1.0)
    for now in (0.0, 5.0, 10.0):
        watch.check(broker, now)
    assert watch.events == []


@pytest.mark.slow
@pytest.mark.dragon
def test_the_old_lost_wakeup_reinjected_is_caught_and_recovered_by_the_pilot(monkeypatch):
    """Put the bug of issue 34 back (a give-back wakes only runtimes that asked the broker, and the
    function pool does not ask when no core is free): the pilot's watchdog reports the stall with its
    dump, wakes the runtimes, and every task finishes."""
    ok, why = backend_class("dragon").available()
    if not ok:
        pytest.skip(f"dragon backend unavailable: {why}")
    from impeccable.runtime.backends import pool as pool_module

    original_lease = pool_module.FunctionPool._lease

    def lease_after_checking_for_room(self, n_cores, n_gpus):
        return original_lease(self, n_cores, n_gpus) if self.host.slots.free_cores else None

    monkeypatch.setattr(pool_module.FunctionPool, "_lease", lease_after_checking_for_room)
    monkeypatch.setattr(SlotBroker, "_hungry", property(lambda self: set(), lambda self, value: None), raising=False)
    with Pilot(Allocation(cores=4), routes={"executable": "local", "function": "dragon"}, stall_after_s=1.0) as pilot:
        executables = pilot.submit_many([executable_task(["sleep", "1.5"], name=f"x{i}") for i in range(4)])
        time.sleep(0.3)
        calls = pilot.submit_many([function_task(probes.sleep, 0.1, name=f"f{i}") for i in range(8)])
        done, not_done = concurrent.futures.wait(executables + calls, timeout=60)
        events = [e.describe() for e in pilot.stalls]
        assert not not_done, events
        assert all(f.record.state is TaskState.DONE for f in calls)
        assert pilot.stalls and {e.runtime for e in pilot.stalls} == {"dragon"}, events
