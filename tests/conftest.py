"""Shared pytest configuration: anyio's own plugin, fixed to asyncio; the simulated upstream with a gate."""

import signal
from collections.abc import Iterator

import pytest

from tests.support.pool_world import GatedUpstream

# A suite started in the background of a non-interactive shell (`pytest &`, nohup, some CI runners) inherits
# SIGINT ignored, and so would every CLI it spawns: the Ctrl-C tests would then see the signal do nothing.
# A handler here (not SIG_IGN) makes each child start with the default disposition, as from a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def upstream() -> Iterator[GatedUpstream]:
    """The simulated upstream (alice, bob, carol) on 127.0.0.1, its consume gate released at the end."""
    sim = GatedUpstream()
    with sim:
        yield sim
        sim.release()
