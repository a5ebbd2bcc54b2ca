"""Cached reads carry an ETag and answer 304 to it: through the whole app, on a real redis-server."""

from __future__ import annotations

import orjson
import pytest
import redis

from cachelab.app.conditional import entity_tag, matches
from cachelab.harness.app_inprocess import InProcessApp

pytest.importorskip("fastapi")

A, B = "acme-01", "globex-02"


def test_if_none_match_is_compared_weakly_and_star_matches_anything():
    tag = entity_tag(b'{"total":3}')
    assert tag == entity_tag(b'{"total":3}') != entity_tag(b'{"total":4}')
    assert all(matches(h, tag) for h in (tag, f"W/{tag}", f'"other", {tag}', "*", f' {tag} '))
    assert not any(matches(h, tag) for h in (None, "", '"other"', tag[:-2] + '"', tag.strip('"')))


async def test_a_cached_read_answers_304_to_its_etag_until_its_value_changes_and_never_for_another_tenant(
    redis_url: str, redis_admin: redis.Redis
):
    app = await InProcessApp.start(redis_url, tenants=2, initiatives_per_tenant=5, rate_limit="100000/60s")
    try:
        session = await app.login(A)
        kpis = f"/api/tenants/{A}/kpis"

        async def get(path: str, if_none_match: str | None = None) -> tuple[int, dict[str, str], bytes]:
            headers = {"If-None-Match": if_none_match} if if_none_match else None
            return await app.request("GET", path, session=session, headers=headers)

        status, first, body = await get(kpis)
        assert status == 200 and first["x-cache"] == "MISS"
        etag = first["etag"]
        assert orjson.loads(body)["tenant_id"] == A
        for sent in (etag, f"W/{etag}", f'"stale", {etag}'):
            status, headers, empty = await get(kpis, sent)
            # Still authenticated, limited and read from the cache: a 304 saves the body only.
            assert (status, empty, headers["etag"], headers["x-cache"]) == (304, b"", etag, "HIT")
            assert headers["cache-control"] == "private" and "x-ratelimit-remaining" in headers
        status, headers, again = await get(kpis, '"stale"')
        assert (status, again, headers["etag"]) == (200, body, etag)

        # Every cached read, not only the KPIs, carries a tag and honours it.
        cached_reads = [f"/api/tenants/{A}/{p}" for p in ("areas", "stats", "users", "initiatives")]
        for path in [*cached_reads, "/api/dashboard"]:
            status, headers, _ = await get(path)
            assert status == 200 and "x-cache" in headers, path
            assert (await get(path, headers["etag"]))[0] == 304, path

        # Another tenant's data: 403 whatever the tag, so a 304 can never confirm what they hold.
        for sent in ("*", etag):
            status, headers, _ = await get(f"/api/tenants/{B}/kpis", sent)
            assert status == 403 and "etag" not in headers

        # A write changes the KPIs: the old tag gets the new body and a new tag.
        row = orjson.loads((await get(f"/api/tenants/{A}/initiatives"))[2])["items"][0]
        patch = orjson.dumps({"progress": (row["progress"] + 50) % 101})
        status, _, _ = await app.request("PATCH", f"/api/tenants/{A}/initiatives/{row['id']}",
                                         session=session, body=patch)  # fmt: skip
        assert status == 200
        status, headers, changed = await get(kpis, etag)
        assert status == 200 and headers["etag"] != etag and changed != body
    finally:
        await app.aclose()
