"""cachelab inspect: a read-only SCAN census of prefixes, counts, memory and TTLs."""

from __future__ import annotations

from cachelab.census import prefix_of, take_census
from cachelab.cli import main
from cachelab.harness import CostMeter


def test_prefixes_fold_ids_and_hash_tags():
    assert prefix_of("cl:{acme-01}:kpi:kpis") == "cl:{*}:kpi:…"
    assert prefix_of("queue:123:job") == "queue:*:job"
    assert prefix_of("session:" + "a" * 43, depth=2) == "session:*"


def test_census_counts_types_ttls_and_memory_without_writing(redis_url, redis_admin):
    for i in range(30):
        redis_admin.set(f"cl:{{t{i}}}:kpi:kpis", "x" * 100, ex=300)
    for i in range(5):
        redis_admin.hset(f"cl:{{t{i}}}:sess:data", "a", "1")  # no TTL: a leak to spot
    meter = CostMeter(redis_url)
    with meter.measure() as cost:
        census = take_census(redis_admin, page=7)
    meter.close()
    by_prefix = {p.prefix: p.as_dict() for p in census.prefixes}
    kpi = by_prefix["cl:{*}:kpi:…"]
    assert kpi["keys"] == 30 and kpi["types"] == {"string": 30}
    assert kpi["ttl"]["<1h"] == 30 and kpi["bytes_per_key"] > 100
    assert by_prefix["cl:{*}:sess:…"]["ttl"]["no-ttl"] == 5
    assert census.scanned == 35 and not census.truncated
    assert "keys" not in cost.commands
    assert set(cost.commands) <= {"scan", "type", "pttl", "memory|usage", "memory", "dbsize"}


def test_census_stops_at_max_keys(redis_admin):
    redis_admin.mset({f"k:{i}": 1 for i in range(500)})
    census = take_census(redis_admin, max_keys=100, page=50)
    assert census.truncated and census.scanned < 500


def test_inspect_command_prints_a_table(redis_url, redis_admin, capsys):
    redis_admin.set("cl:{t1}:kpi:kpis", "x")
    assert main(["inspect", "--url", redis_url]) == 0
    out = capsys.readouterr().out
    assert "cl:{*}:kpi" in out and "scanned 1 of 1 keys" in out


def test_inspect_without_a_url_says_what_to_do(monkeypatch, capsys):
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert main(["inspect"]) == 2
    assert "REDIS_URL" in capsys.readouterr().err
