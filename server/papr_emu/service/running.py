"""Where a model call runs: on the event loop when it cannot block it, else on a worker thread.

One event loop serves every RPC, so nothing on it may wait. A model call runs
under its platform's lock: an RTAS call takes microseconds and runs inline
when the platform is free (a thread hop would cost more than the call); when
another thread is inside the platform, or the call's cost has no small bound
(plugging a 1 TiB DIMM, creating a platform, exporting a device tree), it runs
on a worker thread (``--max-workers`` of them) and the loop serves others meanwhile.

Example::

    runner = Runner(executor)
    status = await runner.quick(platform, lambda: platform.get_sensor_state(9003, index))
    info = await runner.blocking(lambda: platforms.create(name, geometry))
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TypeVar

from ..model import Platform
from ..model.platform import BUSY

T = TypeVar("T")


class Runner:
    """Runs model calls for the servicers (see the module docstring)."""

    def __init__(self, executor: Executor | None = None) -> None:
        self._executor = executor

    async def blocking(self, action: Callable[[], T]) -> T:
        """On a worker thread: for calls whose cost is not small and bounded."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, action)

    async def quick(self, platform: Platform, action: Callable[[], T]) -> T:
        """Inline if no other thread is inside ``platform``; else on a worker thread."""
        result = platform.try_now(action)
        if result is BUSY:
            return await self.blocking(action)
        return result


async def inline(action: Callable[[], T]) -> T:
    """``action()`` on the loop, as an awaitable: for what never blocks (a dict lookup, a counter)."""
    return action()
