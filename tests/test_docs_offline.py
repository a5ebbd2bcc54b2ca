"""`/docs` and `/redoc` load nothing from the internet: they work on a machine without network."""

from __future__ import annotations

import re

import httpx
import pytest

from cachelab.app.main import create_app
from cachelab.config import load_settings

_REFERENCE = re.compile(r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']|url:\s*'([^']+)'""")


@pytest.fixture
async def docs_client():
    # No lifespan: the docs pages need neither Redis nor the database.
    app = create_app(load_settings(redis_url="redis://127.0.0.1:1/0", database_url="sqlite:///:memory:"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as c:
        yield c


@pytest.mark.parametrize(
    ("page", "must_load"),
    [("/docs", {"swagger-ui-bundle.js", "swagger-ui.css"}), ("/redoc", {"redoc.standalone.js"})],
)
async def test_docs_page_references_no_external_host_and_every_asset_answers(docs_client, page, must_load):
    response = await docs_client.get(page)
    assert response.status_code == 200
    html = response.text
    assert not re.search(r"""https?://|["'(]//""", html)  # no absolute or protocol-relative URL
    references = {a or b for a, b in _REFERENCE.findall(html)}
    assert must_load <= {ref.rsplit("/", 1)[-1] for ref in references}
    for ref in references:
        assert ref.startswith("/"), ref
        asset = await docs_client.get(ref)
        assert asset.status_code == 200 and asset.content, ref
    assert (await docs_client.get("/openapi.json")).json()["openapi"].startswith("3.")
