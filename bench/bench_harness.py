"""The harness's own cost: an empty operation run exactly as the real ones are.

Subtract these from any other row of the same run to get the operation's own
time. ``test_async_noop_one_call_per_round`` shows why rounds batch many
calls: entering ``run_until_complete`` once per operation would add more than
a raw GET costs. The cost pass of a no-op must read zero commands and zero
round trips: that checks the meter subtracts its own INFO traffic.
"""

from __future__ import annotations

from typing import Any


async def noop() -> None:
    pass


def sync_noop() -> None:
    pass


def test_async_noop(bench_async: Any):
    bench_async(noop, group="harness", ops=1000)


def test_async_noop_one_call_per_round(bench_async: Any):
    bench_async(noop, group="harness", ops=1)


def test_sync_noop(bench_sync: Any):
    bench_sync(sync_noop, group="harness", ops=1000)
