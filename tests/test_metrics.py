"""Metrics come from records alone; check them on hand-made timelines."""

from __future__ import annotations

import pytest

from impeccable.runtime.metrics import concurrency_series, slot_overlaps, steady_throughput, summarize
from impeccable.runtime.records import TaskRecord, TaskState


def record(uid, start, finish, cores=1, slots=(0,), state=TaskState.DONE, submitted=0.0):
    times = dict(submitted=submitted, scheduled=start, started=start, finished=finish)
    return TaskRecord(
        uid=uid, name=uid, kind="executable", cores=cores, gpus=0, tags={}, state=state, slots=slots, **times
    )


def test_utilisation_makespan_and_throughput():
    records = [record("a", 0, 10, cores=2, slots=(0, 1)), record("b", 0, 5, slots=(2,)), record("c", 5, 10, slots=(2,))]
    m = summarize(records, cores=4)
    assert m.makespan_s == 10
    assert m.utilization == pytest.approx((20 + 5 + 5) / 40)
    assert m.throughput_tasks_per_s == pytest.approx(0.3)
    assert m.peak_busy_cores == 3 and m.done == 3


def test_failed_and_canceled_are_counted():
    records = [
        record("a", 0, 1),
        record("b", 1, 2, state=TaskState.FAILED),
        record("c", 2, 2, state=TaskState.CANCELED),
    ]
    m = summarize(records, cores=1)
    assert (m.done, m.failed, m.canceled) == (1, 1, 1)


def test_concurrency_series_counts_cores_finishes_first():
    series = concurrency_series([record("a", 0, 1, cores=2), record("b", 1, 2, cores=4)])
    assert series == [(0, 2), (1, 0), (1, 4), (2, 0)]


def test_slot_overlaps_detects_double_booking():
    ok = [record("a", 0, 1, slots=(0,)), record("b", 1, 2, slots=(0,))]
    assert slot_overlaps(ok) == []
    clash = [record("a", 0, 2, slots=(0, 1)), record("b", 1, 3, slots=(1,))]
    assert slot_overlaps(clash) == [(1, "a", "b")]


def test_steady_throughput_ignores_ramp_up_and_tail():
    times = [0.0] + [10 + i * 0.1 for i in range(98)] + [100.0]
    assert steady_throughput(times) == pytest.approx(10, rel=0.05)


def test_empty_records():
    m = summarize([], cores=4)
    assert m.makespan_s == 0 and m.utilization == 0 and m.throughput_tasks_per_s == 0
