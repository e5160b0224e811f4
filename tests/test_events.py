"""The manager's event queue and interrupt guard: Ctrl-C is never deaf and never splits a handler."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from impeccable.events import EventQueue, InterruptGuard


def _sigint_soon(delay: float = 0.2) -> threading.Timer:
    timer = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    return timer


def test_wait_is_interrupted_even_after_rdkit_set_sa_restart():
    """RDKit re-installs the SIGINT handler with SA_RESTART on every call that checks for Ctrl-C."""
    pytest.importorskip("rdkit")
    from rdkit import Chem
    from rdkit.Chem import rdMolDescriptors

    rdMolDescriptors.CalcNumRotatableBonds(Chem.MolFromSmiles("CCCCO"))
    queue = EventQueue()
    late = threading.Timer(5.0, queue.put, ("late",))
    late.start()
    with InterruptGuard(), pytest.raises(KeyboardInterrupt):
        _sigint_soon()
        queue.wait()
    late.cancel()
    assert queue.pop() is None  # nothing was taken off the queue by the interrupted wait
    queue.close()


def test_deferred_block_finishes_then_raises():
    done = []
    with InterruptGuard() as guard, pytest.raises(KeyboardInterrupt):
        with guard.deferred():
            os.kill(os.getpid(), signal.SIGINT)
            done.append("handler finished")
    assert done == ["handler finished"]


def test_items_put_from_threads_come_out_in_order():
    queue = EventQueue()
    threads = [threading.Thread(target=queue.put, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = []
    while len(got) < 50:
        queue.wait()
        while (item := queue.pop()) is not None:
            got.append(item)
    assert sorted(got) == list(range(50))
    queue.close()
