"""The HTTP API fuzzed from its own OpenAPI schema (schemathesis), the metadata filter included.

Every generated request (valid and invalid bodies, filters with any operators) must get an answer below 500, and a
request the API refuses (4xx) must leave the index as it was. Bounded in examples per operation, and every
request stays inside this process (ASGI), on a small real index.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from starlette.testclient import TestClient

from mrl.data import Document
from mrl.index import Index
from mrl.serve import Limits, create_app

EXAMPLES = 40  # per operation: enough for schemathesis to vary every field, bounded for CI


@pytest.fixture(scope="module")
def served(corpus, model, tmp_path_factory):
    _, _, docs, vectors = corpus
    docs = [Document(d.id, d.text, {"group": "ab"[i % 2], "year": 2000 + i % 20}) for i, d in enumerate(docs)]
    index = Index.build(tmp_path_factory.mktemp("fuzz") / "i", vectors, docs, model="default", prefix_dim=64,
                        loaded_model=model)  # fmt: skip
    app = create_app(index, limits=Limits(max_body_bytes=200_000))
    with TestClient(app) as client:  # one event loop: the app's startup runs the encoder's micro-batcher in it
        yield index, app, client


def test_no_request_gets_a_server_error_and_a_refused_one_changes_nothing(served):
    index, app, client = served
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {"POST /search", "POST /documents"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def call(case):
            before = (index.count, index.generation)
            request = case.as_transport_kwargs(base_url=str(client.base_url))
            if not request.get("cookies"):
                request.pop("cookies", None)  # starlette warns about per-request cookies, even empty ones
            response = client.request(**request)
            where = f"{case.method} {case.path}"
            assert response.status_code < 500, f"{where}: {response.status_code} {response.text[:300]}"
            if response.status_code >= 400:
                assert (index.count, index.generation) == before, f"a refused {where} changed the index"

        call()


def test_a_filter_reaches_the_search_and_a_bad_one_is_a_400_with_its_path(served):
    _, _, client = served
    found = client.post("/search", json={"query": "vitamin D", "k": 5, "filter": {"group": "a"}})
    assert found.status_code == 200, found.text
    assert all(h["metadata"]["group"] == "a" for h in found.json()["results"])
    ranged = client.post("/search", json={"query": "vitamin D", "k": 5, "filter": {"year": {"$lt": 2005}}})
    assert all(h["metadata"]["year"] < 2005 for h in ranged.json()["results"])
    bad = client.post("/search", json={"query": "vitamin D", "filter": {"year": {"$almost": 3}}})
    assert bad.status_code == 400 and "at $.year.$almost: unknown operator '$almost'" in bad.json()["error"]
    text_range = client.post("/search", json={"query": "vitamin D", "filter": {"group": {"$gt": 1}}})
    assert text_range.status_code == 400 and "holds text" in text_range.json()["error"]
