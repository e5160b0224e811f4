"""Shared fixtures. Backend-specific fixtures live in their own test modules."""

from __future__ import annotations

import pytest

from impeccable.runtime.pilot import Pilot
from impeccable.runtime.resources import Allocation


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
