"""``cachelab peers`` (issue 16): the interleaving, the ratio math, skipping a missing peer, and a
``--quick`` run end to end on a private redis-server. Behaviour only: no test asserts a speed."""

from __future__ import annotations

import asyncio
import json
import math
import sys
from typing import Any

import pytest
import redis
import redis.asyncio

from cachelab import cli
from cachelab.analysis import peers
from cachelab.analysis.peers import (
    Contender,
    Group,
    Pair,
    PeerMissing,
    Sample,
    Settings,
    counting,
    import_peer,
    measure_group,
    pair_results,
    ratio_stats,
    rotated,
    verdict,
)
from cachelab.client import RoundTripCounter
from cachelab.report.stats import compare_paired
from cachelab.worker import Worker

# cashews and aiocache call redis-py methods it has deprecated (close, setex): their business, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated:DeprecationWarning")


# -- interleaving -------------------------------------------------------------------------
def test_rotated_order_moves_each_contender_through_every_position():
    items = ["a", "b", "c"]
    orders = [rotated(items, b) for b in range(6)]
    assert orders[:3] == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    assert orders[3:] == orders[:3]
    for item in items:  # over len(items) blocks, every contender takes every place once
        assert sorted(order.index(item) for order in orders[:3]) == [0, 1, 2]
    assert rotated([], 4) == []


def _recording_group(log: list[tuple[str, str, int]], unit: str = "µs/op") -> Group:
    def contender(name: str) -> Contender:
        async def run(n: int) -> None:
            log.append(("run", name, n))

        async def prepare(n: int) -> None:
            log.append(("prepare", name, n))

        return Contender(name, "test", run, prepare)

    return Group("cache", "test group", unit, [contender(n) for n in ("ours", "x", "y")],
                 [Pair("ours", "x", 1.2), Pair("ours", "y")])


def test_measure_group_warms_up_then_runs_rotated_blocks_each_prepared_untimed():
    log: list[tuple[str, str, int]] = []
    group = _recording_group(log)
    samples = asyncio.run(measure_group(group, blocks=4, ops=30, meter=None, tally=None))

    warm = [e for e in log if e[2] != 30]
    assert [e[1] for e in warm if e[0] == "run"] == ["ours", "x", "y"]  # one warm-up each, not kept
    timed = [e[1] for e in log if e[0] == "run" and e[2] == 30]
    assert timed == ["ours", "x", "y", "x", "y", "ours", "y", "ours", "x", "ours", "x", "y"]
    prepared = [e[1] for e in log if e[0] == "prepare" and e[2] == 30]
    assert prepared == timed  # each block's backlog is made right before its (timed) run

    assert len(samples) == 12
    assert [(s.contender, s.block, s.position) for s in samples[:6]] == [
        ("ours", 0, 0), ("x", 0, 1), ("y", 0, 2), ("x", 1, 0), ("y", 1, 1), ("ours", 1, 2)]
    assert all(s.ops == 30 and s.seconds > 0 for s in samples)


# -- ratio math -----------------------------------------------------------------------------
def test_ratio_stats_are_per_block_ratios_with_the_paired_interval():
    ours, theirs = [2.0, 4.0, 6.0, 3.0], [1.0, 2.0, 2.0, 1.5]  # per-block ratios 2, 2, 3, 2
    median, low, high, ci_low, ci_high = ratio_stats(ours, theirs)
    assert (median, low, high) == (2.0, 2.0, 3.0)
    expected = compare_paired(theirs, ours)
    assert expected is not None
    assert (ci_low, ci_high) == (expected.low, expected.high)
    geometric_mean = math.exp(sum(math.log(o / t) for o, t in zip(ours, theirs, strict=True)) / 4)
    assert ci_low < geometric_mean < ci_high


def test_ratio_stats_pairs_by_block_not_by_sorted_value():
    # Block 1 was slow for both sides: pairing by block sees a constant ratio of 2.
    median, low, high, ci_low, ci_high = ratio_stats([2.0, 20.0, 2.0], [1.0, 10.0, 1.0])
    assert (median, low, high) == (2.0, 2.0, 2.0)
    assert ci_low == pytest.approx(2.0) and ci_high == pytest.approx(2.0)


def test_ratio_stats_with_one_block_has_no_interval():
    assert ratio_stats([3.0], [2.0]) == (1.5, 1.5, 1.5, None, None)


@pytest.mark.parametrize(
    ("low", "high", "target", "higher", "expected"),
    [
        (0.9, 1.1, 1.2, False, "pass"),  # lower is better: the whole interval under the target
        (1.1, 1.3, 1.2, False, "unsure"),
        (1.25, 1.4, 1.2, False, "fail"),
        (0.45, 0.6, 0.4, True, "pass"),  # higher is better (jobs/s)
        (0.3, 0.5, 0.4, True, "unsure"),
        (0.2, 0.3, 0.4, True, "fail"),
        (0.2, 0.3, None, True, "report"),  # no target: reported, not judged
        (None, None, 1.0, False, "unsure"),  # one block: no interval, no call
    ],
)
def test_verdict_needs_the_whole_interval_on_one_side(low, high, target, higher, expected):
    assert verdict(low, high, target, higher_is_better=higher) == expected


def test_pair_results_compare_throughput_as_higher_is_better():
    group = _recording_group([], unit="jobs/s")
    samples = []
    for b in range(3):  # ours drains 100 jobs in 0.1 s (1000/s), x in 0.2 s (500/s), y in 0.02 s
        samples += [Sample("ours", b, 0, 100, 0.1, 200, 5000.0, 200),
                    Sample("x", b, 1, 100, 0.2, 100, 400.0, 100),
                    Sample("y", b, 2, 100, 0.02, 100, 400.0, 100)]
    rows = {r.theirs: r for r in pair_results(group, samples)}
    assert rows["x"].ratio == pytest.approx(2.0) and rows["x"].ours_value == pytest.approx(1000)
    assert rows["x"].verdict == "pass"  # ≥ 1.2× with no spread
    assert rows["y"].ratio == pytest.approx(0.2) and rows["y"].verdict == "report"
    assert rows["x"].ours_round_trips == 2.0 and rows["x"].ours_server_us == 50.0
    assert rows["x"].theirs_round_trips == 1.0 and rows["x"].theirs_server_us == 4.0


# -- a missing peer --------------------------------------------------------------------------
def test_a_missing_peer_raises_peer_missing_with_the_install_hint(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "cashews", None)  # import cashews now raises ImportError
    with pytest.raises(PeerMissing, match=r"cashews is not installed \(pip install -e \"\.\[peers\]\"\)"):
        import_peer("cashews")


def test_missing_peers_are_skipped_with_a_line_not_an_error(monkeypatch: pytest.MonkeyPatch):
    for module in ("cashews", "rq"):
        monkeypatch.setitem(sys.modules, module, None)
    lines: list[str] = []
    result = peers.run(Settings(blocks=2, ops=3, keys=3, sections=("cache", "drain")), progress=lines.append,
                       worker=Worker)
    theirs = {r["theirs"] for r in result["pairs"]}
    assert "cashews get" not in theirs and "RQ SimpleWorker" not in theirs
    assert {"raw GET+orjson", "raw BRPOP loop"} <= theirs
    assert len(result["skipped"]) == 2  # said once each, however many groups wanted the peer
    assert any(line.startswith("skipped: cashews is not installed") for line in lines)
    assert any(line.startswith("skipped: rq is not installed") for line in lines)
    assert "skipped: rq is not installed" in peers.table(result)


# -- the tally -------------------------------------------------------------------------------
def test_counting_tallies_every_client_and_restores_redis_py(redis_url: str):
    classes = (redis.asyncio.connection.AbstractConnection, redis.connection.AbstractConnection)
    before = [(c.send_command, c.pack_commands, c.send_packed_command) for c in classes]

    async def traffic() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)  # its own default pool
        try:
            await client.set("peers:t", "1")
            await client.get("peers:t")
            async with client.pipeline(transaction=True) as pipe:
                await pipe.incr("peers:n").get("peers:n").execute()
        finally:
            await client.aclose()

    with counting() as tally:
        base = tally.snapshot()
        asyncio.run(traffic())
        sync = redis.Redis.from_url(redis_url)
        sync.get("peers:t")
        sync.close()
        rt, sent, queued = tally.snapshot()
    assert rt - base[0] >= 4  # set, get, the transaction (one round trip), the sync get (+ handshakes)
    for name in ("set", "incrby", "multi", "exec"):  # redis-py sends incr() as INCRBY
        assert sent.get(name, 0) >= 1, name
    assert sent["get"] >= 3 and queued == {"incrby": 1, "get": 1}
    assert [(c.send_command, c.pack_commands, c.send_packed_command) for c in classes] == before


def test_counting_leaves_a_cost_meters_info_reads_out_and_can_count_into_a_given_counter(redis_url: str):
    counter = RoundTripCounter()
    sync = redis.Redis.from_url(redis_url)
    try:
        sync.ping()  # connect first
        with counting(into=counter) as tally:
            assert tally is counter
            pipe = sync.pipeline(transaction=False)
            pipe.info("stats")
            pipe.info("commandstats")
            pipe.execute()  # what CostMeter.snapshot sends
            sync.info("memory")
            assert counter.snapshot()[0] == 0
            sync.get("peers:none")
        rt, sent, _ = counter.snapshot()
    finally:
        sync.close()
    assert rt == 1 and sent["get"] == 1


# -- end to end ------------------------------------------------------------------------------
def _expected_rows(settings: Settings) -> set[tuple[str, str, str]]:
    rows = set()
    for size in peers.VALUE_SIZES:
        for keyset in ("hot key", f"{settings.keys} keys"):
            what = f"cache hit {size}, {keyset}"
            for ours in ("ours get", "ours fetch"):
                rows |= {(what, ours, t) for t in ("raw GET+orjson", "cashews get", "aiocache get")}
    rows.add(("cache hit 0.7KB, hot key", peers.AA_CONTROL, "raw GET+orjson"))
    for algorithm, strategy in peers.ALGORITHMS.items():
        for path in peers.RATES:
            for keyset in ("one identifier", f"{settings.keys} identifiers"):
                rows.add((f"rate limit {algorithm}, {path}, {keyset}", "ours check",
                          f"limits {strategy.removesuffix('RateLimiter')}"))
    what = "queue drain, 1 worker, no-op jobs"
    rows |= {(what, "ours Worker", "raw BRPOP loop"), (what, "ours Worker", "RQ SimpleWorker")}
    return rows


def test_quick_run_end_to_end_produces_every_row_with_sane_fields(tmp_path: Any):
    for module in ("cashews", "aiocache", "limits", "rq"):
        pytest.importorskip(module)
    settings = Settings.quick()
    result = peers.run(settings, worker=Worker)
    rows = result["pairs"]
    assert {(r["what"], r["ours"], r["theirs"]) for r in rows} == _expected_rows(settings)
    assert result["skipped"] == []
    for r in rows:
        assert r["blocks"] == settings.blocks
        assert r["ours_value"] > 0 and r["theirs_value"] > 0
        assert r["ratio_min"] <= r["ratio"] <= r["ratio_max"]
        assert r["ci_low"] is not None and 0 < r["ci_low"] <= r["ci_high"]
        assert r["ours_round_trips"] >= 1 and r["theirs_round_trips"] >= 1, r
        assert r["ours_server_us"] >= 0 and r["theirs_server_us"] >= 0, r  # a GET may book 0 µs
        if r["section"] != "cache":  # scripts and queues always cost the server something
            assert r["ours_server_us"] > 0 and r["theirs_server_us"] > 0, r
        assert r["verdict"] in ({"pass", "fail", "unsure"} if r["target"] else {"report"})
    by = {(r["what"], r["ours"], r["theirs"]): r for r in rows}
    hit = by["cache hit 0.7KB, hot key", "ours get", "raw GET+orjson"]
    assert hit["theirs_round_trips"] == 1.0 and hit["target"] == 1.2 and hit["unit"] == "µs/op"
    limiter = by["rate limit fixed_window, denied, one identifier", "ours check", "limits FixedWindow"]
    assert limiter["ours_round_trips"] == 1.0 and limiter["theirs_round_trips"] == 1.0
    assert limiter["target"] == 1.0
    drain = by["queue drain, 1 worker, no-op jobs", "ours Worker", "RQ SimpleWorker"]
    assert drain["unit"] == "jobs/s" and drain["target"] == 5.0
    # every contender ran every block, each ordering position used
    samples = [s for s in result["samples"] if s["what"] == "queue drain, 1 worker, no-op jobs"]
    assert len(samples) == 3 * settings.blocks
    assert {s["position"] for s in samples if s["contender"] == "ours Worker"} == {0, 1, 2}

    md, js = peers.write(result, tmp_path)
    text = md.read_text()
    assert text.startswith("| what | ours | theirs | ours/theirs median [min–max] |")
    assert text.count("\n| ") == len(rows) + 1  # the separator line and one line per row
    assert json.loads(js.read_text())["meta"]["settings"]["blocks"] == settings.blocks


def test_cli_peers_quick_prints_the_table_and_writes_files(tmp_path: Any, capsys: pytest.CaptureFixture[str]):
    assert cli.main(["peers", "--quick", "--only", "drain", "--blocks", "2", "--ops", "5",
                     "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| queue drain, 1 worker, no-op jobs (jobs/s) | ours Worker:" in out
    assert "cache hit" not in out
    result = json.loads((tmp_path / "peers.json").read_text())
    assert result["meta"]["settings"] == {"blocks": 2, "ops": 5, "keys": 50, "sections": ["drain"]}


def test_without_a_worker_class_the_drain_is_skipped_with_a_line():
    lines: list[str] = []
    result = peers.run(Settings(blocks=2, ops=2, keys=2, sections=("drain",)), progress=lines.append)
    assert result["pairs"] == []
    assert result["skipped"] == ["queue drain: no Worker class given (cachelab peers passes "
                                 "cachelab.worker.Worker)"]
    assert lines == ["skipped: " + result["skipped"][0]]


def test_cli_peers_rejects_fewer_than_two_blocks(capsys: pytest.CaptureFixture[str]):
    assert cli.main(["peers", "--blocks", "1"]) == 2
    assert "--blocks must be >= 2" in capsys.readouterr().err
