"""Pipelining: what batching commands into one round trip buys, per command.

The same GET, sent one round trip at a time (sequential) or ``batch`` at a
time in a pipeline, with and without MULTI/EXEC. Times and costs are per
command (``batch=b`` in the harness), so ``round_trips_per_op`` reads 1/b and
the time column shows how fast the per-command cost falls towards the
client's own encode/parse cost. A transaction adds MULTI and EXEC (visible in
``commands``) and makes the server queue the commands.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis

from cachelab.client import ResilientRedis
from cachelab.harness.payloads import value_of_size
from cachelab.patterns.keys import make_key

KEY = make_key("bench", "pipeline", "k")
BATCHES = [1, 10, 100, 1000]
COMMANDS_PER_ROUND = 2000


@pytest.fixture
def seeded(bench_admin: redis.Redis) -> None:
    bench_admin.set(KEY, value_of_size(100))


def test_sequential_get(bench_async: Any, bench_rredis: ResilientRedis, seeded: None):
    client = bench_rredis.client
    bench_async(lambda: client.get(KEY), group="pipelining", ops=200, extra={"mode": "sequential"})


@pytest.mark.parametrize("transaction", [False, True], ids=["pipeline", "multi_exec"])
@pytest.mark.parametrize("batch", BATCHES)
def test_pipelined_get(
    batch: int, transaction: bool, bench_async: Any, bench_rredis: ResilientRedis, seeded: None
):
    client = bench_rredis.client

    async def run_batch() -> None:
        pipe = client.pipeline(transaction=transaction)
        for _ in range(batch):
            pipe.get(KEY)
        await pipe.execute()

    bench_async(
        run_batch,
        group="pipelining",
        ops=max(2, min(200, COMMANDS_PER_ROUND // batch)),
        batch=batch,
        extra={"mode": "multi_exec" if transaction else "pipeline"},
    )
