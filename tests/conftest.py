"""Shared fixtures. Backend-specific fixtures live in their own test modules."""

from __future__ import annotations

import pytest

from impeccable.runtime import stall
from impeccable.runtime.pilot import Pilot
from impeccable.runtime.resources import Allocation


@pytest.fixture(autouse=True)
def _no_stall_events(request: pytest.FixtureRequest):
    """A test fails if a pilot's stall watchdog reported anything during it (unless it expects one)."""
    before = len(stall.RECORDED)
    yield
    events = stall.RECORDED[before:]
    del stall.RECORDED[before:]
    if events and "expects_stall" not in request.keywords:
        pytest.fail("stall watchdog: " + "; ".join(e.describe() for e in events), pytrace=False)


@pytest.fixture
def local_pilot():
    """A started local pilot on 4 advertised cores; shut down (pending work canceled) after the test."""
    pilot = Pilot(Allocation(cores=4), routes={"executable": "local", "function": "local"})
    pilot.start()
    try:
        yield pilot
    finally:
        pilot.shutdown(cancel_pending=True)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", help="also run tests marked slow (science, real clusters); CI does")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="slow test: run with --slow (CI does)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
