"""A Redis fault inside a Locust run: the plugin drives a fault proxy on the test's clock."""

from __future__ import annotations

import json
import socket
from collections import Counter

import pytest

from cachelab.harness.app_server import AppServer
from cachelab.loadtest.faults import parse_faults
from cachelab.loadtest.runner import run_scenario
from cachelab.servers import RedisServer, free_port


def test_only_proxy_faults_are_allowed_in_a_locust_run():
    assert [s.kind for s in parse_faults(["hang@1+2", "slow@0+1:rtt=0.01"])] == ["hang", "slow"]
    with pytest.raises(ValueError, match="proxy faults"):
        parse_faults(["kill@1+1"])


@pytest.mark.slow
def test_a_hang_during_the_run_fails_open_and_is_recorded(tmp_path):
    port = free_port()
    env = {
        "CACHELAB_REDIS_COMMAND_TIMEOUT": "0.2",
        "CACHELAB_REDIS_CONNECT_TIMEOUT": "0.2",
        "CACHELAB_BREAKER_RESET_TIMEOUT": "0.5",
        "CACHELAB_RATE_LIMIT": "1000000/60s",
    }
    # Sessions (and the queue) on a Redis of their own, as in docker-compose: the cache Redis hangs,
    # every request's session is still checked. (With one shared Redis, they would all be 503s.)
    with (
        RedisServer() as redis_server,
        RedisServer() as durable,
        AppServer(
            redis_url=f"redis://127.0.0.1:{port}/0", env={**env, "QUEUE_REDIS_URL": durable.url},
            tenants=2, initiatives_per_tenant=100,
        ) as app,
    ):
        result = run_scenario(
            base_url=app.base_url,
            seed_password=app.seed_password,
            tenants=app.tenants,
            duration=6,
            users=4,
            mix="browser=1",
            think_time="0.02,0.05",
            results_dir=tmp_path,
            timeout=90,
            extra_args=[
                "--fault",
                "hang@2+2",
                "--fault-proxy",
                redis_server.url,
                "--fault-proxy-port",
                str(port),
            ],
        )
    assert result.exit_code == 0, result.output_tail
    assert result.failures == 0, result.table()  # reads fail open to the database
    written = json.loads((tmp_path / "loadtest.json").read_text())
    assert written["faults"] == [{"kind": "hang", "start": 2.0, "end": 4.0}]
    outcomes = Counter()
    for endpoint in written["endpoints"].values():
        outcomes.update(endpoint["x_cache"])
    assert outcomes["BYPASS"] > 0 and outcomes["HIT"] > 0, outcomes
    with socket.socket() as probe:  # the proxy process is gone
        assert probe.connect_ex(("127.0.0.1", port)) != 0
