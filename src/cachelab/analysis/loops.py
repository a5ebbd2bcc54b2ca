"""Run asyncio code from a notebook cell.

A Jupyter kernel already runs an event loop in its main thread, so
``asyncio.run`` (used by the experiments, e.g. :func:`~cachelab.experiments.outage.run_outage`)
refuses to start there. These helpers run such code in a short-lived worker
thread, which has no loop of its own; from a plain script they run it directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def off_loop(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, in a worker thread if this thread is running an event loop."""
    if not _loop_running():
        return fn(*args, **kwargs)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cachelab-analysis") as pool:
        return pool.submit(fn, *args, **kwargs).result()


def run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run the coroutine ``factory()`` makes to completion on a fresh event loop."""
    return off_loop(lambda: asyncio.run(factory()))
