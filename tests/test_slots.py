"""The pilot's one pool of slots, without any runtime: placement, contention and wake-ups."""

from __future__ import annotations

from impeccable.runtime.resources import Allocation
from impeccable.runtime.slots import SlotBroker


def two_views(cores: int = 8, nodes: int = 2):
    broker = SlotBroker(Allocation.emulated(cores, nodes=nodes))
    woken: list[str] = []
    flux, dragon = broker.view("flux"), broker.view("dragon")
    flux.wake = lambda: woken.append("flux")
    dragon.wake = lambda: woken.append("dragon")
    return broker, flux, dragon, woken


def test_two_waiting_runtimes_never_hold_each_other_off_with_nothing_running():
    """The CI hang of test_hybrid: both runtimes waited, each refused for the other, nothing ran."""
    broker, flux, dragon, woken = two_views()
    held = dragon.take(4)  # dragon busy on node 0
    assert held is not None
    assert flux.place([(4, 0), (4, 0)]) is None  # a wide MPI task needs both nodes whole: flux waits
    flux.schedule_pass_ends(True)
    dragon.give_back(*held)  # dragon's task ends: flux is woken
    assert woken == ["flux"]
    assert dragon.take(1) is None  # dragon has more work, but flux waited first at equal usage
    dragon.schedule_pass_ends(True)
    wide = flux.place([(4, 0), (4, 0)])  # flux's pass after its wake-up: it must get both nodes
    assert wide is not None and len(wide.cores) == 8 and set(wide.nodes) == {0, 1}
    flux.schedule_pass_ends(False)
    flux.give_back(wide.cores)
    assert woken[-1] == "dragon" and dragon.take(1) is not None


def test_a_runtime_that_placed_some_tasks_but_not_all_keeps_its_claim():
    broker, flux, dragon, woken = two_views()
    held = dragon.take(4, 0)
    assert held is not None
    flux.schedule_pass_begins()
    assert flux.place([(4, 0), (4, 0)]) is None  # first in its queue: does not fit
    small = flux.take(1)  # backfill behind it: fits
    assert small is not None
    flux.schedule_pass_ends(True)  # the wide task still waits
    dragon.give_back(*held)
    assert woken == ["flux"]  # so dragon's freed slots wake it


def test_the_lower_usage_runtime_goes_first_and_an_idle_pass_drops_the_claim():
    broker, flux, dragon, woken = two_views(cores=4, nodes=1)
    busy = flux.take(3)
    assert busy is not None
    assert dragon.take(2) is None  # 1 core free: dragon (usage 0) waits for 2
    dragon.schedule_pass_ends(True)
    assert flux.take(1) is None  # flux uses 3 > dragon's 0: the free core is kept for dragon
    flux.schedule_pass_ends(True)
    flux.give_back(busy[0][:1])
    pair = dragon.take(2)
    assert pair is not None
    dragon.schedule_pass_ends(False)
    assert dragon not in broker._waiting  # nothing left to wait for: no claim, no wake-ups
    dragon.give_back(*pair)
    assert woken.count("flux") == 1


def test_a_whole_gpu_comes_from_one_device_and_fractions_share_the_fullest():
    """GPU slots are shares of devices (4 per GPU here): a task asking a whole GPU gets one device's four
    slots, never two halves; a fraction goes where fractions already run, keeping whole devices free."""
    broker = SlotBroker(Allocation.emulated(8, nodes=1, gpus=8, gpu_shares=4))
    view = broker.view("fn")
    quarter = view.take(1, 1)
    assert quarter is not None and quarter[1][0] // 4 == 0
    whole = view.take(1, 4)
    assert whole is not None and {g // 4 for g in whole[1]} == {1} and len(whole[1]) == 4
    another = view.take(1, 1)
    assert another is not None and another[1][0] // 4 == 0  # beside the first quarter, not on a free device
    view.give_back(*whole)
    assert view.take(1, 4) is not None  # device 1 whole again
    assert view.take(1, 4) is None  # device 0 has two quarters out: no whole GPU left, though 2 slots are free
