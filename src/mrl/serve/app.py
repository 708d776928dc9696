"""The HTTP API over an index: search, upsert, delete, health, stats, Prometheus metrics, a web page,
and OpenAI-compatible embeddings (mrl.serve.openai_api).

Bodies are read with a size cap and parsed here rather than by FastAPI so that every malformed
request -- bad JSON, wrong types, oversized bodies, NaN vectors -- gets a 4xx with a one-line
message in ``{"error": ...}`` and the server keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mrl import __version__
from mrl.data import Document
from mrl.errors import MrlError, Unavailable
from mrl.index.filters import FilterError, parse_filter
from mrl.index.interface import SearchIndex, SearchTimings, unit_vectors
from mrl.serve.auth import key_ok
from mrl.serve.batcher import EncodeBatcher
from mrl.serve.openai_api import OpenAIError, add_openai_routes

log = logging.getLogger("mrl.serve")


@dataclass
class Limits:
    max_k: int = 100
    max_shortlist: int = 5000
    max_text_chars: int = 2000
    max_batch: int = 64
    max_documents: int = 256
    max_body_bytes: int = 1_000_000


class ApiError(Exception):
    """An HTTP error; library messages name parameters in backticks, which here are the body's fields as they are."""

    def __init__(self, status: int, message: str):
        self.status = status
        self.message = message.replace("`", "")

    def response(self, path: str) -> JSONResponse:
        """``{"error": message}``; under ``/v1/`` (the OpenAI-compatible routes) in OpenAI's error shape."""
        if path.startswith("/v1/"):
            kind = "authentication_error" if self.status == 401 else "invalid_request_error"
            return OpenAIError(self.status, self.message, kind=kind).response()
        return JSONResponse({"error": self.message}, status_code=self.status)


def refused(exc: MrlError, status: int) -> ApiError:
    """A library error as the HTTP error it is: ``status`` for the request's fault, 503 where a part that must answer
    did not (:class:`mrl.errors.Unavailable`: a shard with no live replica), never a partial answer."""
    return ApiError(503 if isinstance(exc, Unavailable) else status, str(exc))


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str | list[str] | None = Field(None, description="One query text or a batch of them.")
    vector: list[float] | list[list[float]] | None = Field(None, description="One full-width vector or a batch.")
    k: int = Field(10, description="Results per query.")
    shortlist: int | None = Field(None, description="First-pass candidates k' (default: tuned, else 10 x k).")
    ann_search: int | None = Field(None, description="efSearch (hnsw, zvec), nprobe (ivf) or search window (vamana).")
    target_recall: float | None = Field(None, description="Use the index's tuned settings if tuned for >= this.")
    funnel: list[int] | None = Field(None, description="Intermediate rerank dims, e.g. [128].")
    adaptive: bool = Field(
        False,
        description="Adaptive width: read the full vectors only of the candidates the middle width leaves in doubt, "
        "with the margin the index was tuned with; the response's 'widths' says what each query read.",
    )
    filter: dict[str, Any] | None = Field(
        None,
        description='Metadata filter in the Chroma / MongoDB "where" shape, e.g. {"source": "pubmed", "year": '
        '{"$gte": 2020}}: $eq $ne $gt $gte $lt $lte $in $nin $exists, $and $or $not.',
    )


class WidthsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(description="One query text.")
    k: int = Field(10, description="Results per width.")
    dims: list[int] = Field([32, 64, 128], description="Prefix widths to rank at, beside the full width.")


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    text: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class UpsertRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    documents: list[DocumentIn]


def body_schema(model: type[BaseModel]) -> dict:
    """The request body a route documents in the OpenAPI schema (the route reads and checks the body itself), with
    pydantic's ``$defs`` inlined: OpenAPI resolves references among its own components only."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node):
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(defs[node["$ref"].rsplit("/", 1)[1]])
            return {k: inline(v) for k, v in node.items()}
        return [inline(v) for v in node] if isinstance(node, list) else node

    return {"requestBody": {"required": True, "content": {"application/json": {"schema": inline(schema)}}}}


def create_app(index: SearchIndex, api_key_hashes: list[str] | None = None, limits: Limits | None = None) -> FastAPI:
    limits = limits or Limits()
    registry = CollectorRegistry()
    requests_total = Counter("mrl_requests_total", "HTTP requests", ["endpoint", "status"], registry=registry)
    latency = Histogram("mrl_request_seconds", "Request latency", ["endpoint"], registry=registry)
    stage = Histogram(
        "mrl_stage_seconds",
        "Time per search/write stage",
        ["stage"],
        registry=registry,
        buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    )
    batch_size = Histogram(
        "mrl_encoder_batch_size",
        "Texts per encoder forward pass (micro-batching)",
        registry=registry,
        buckets=(1, 2, 4, 8, 16, 32, 64, 128),
    )

    def encode(texts: list[str]) -> np.ndarray:
        batch_size.observe(len(texts))
        return index.encode(texts)

    write_lock = asyncio.Lock()
    batcher = EncodeBatcher(encode, max_batch=limits.max_batch)

    async def check_k(k: int) -> None:
        # one count, off the event loop: on a database it is a query, on a sharded index a call to every shard
        most = min(limits.max_k, await asyncio.to_thread(lambda: index.count))
        if not 0 < k <= most:
            raise ApiError(422, f"k must be between 1 and {most}")

    def check_query_text(text: str) -> None:
        if not text.strip():
            raise ApiError(422, "query text is empty")
        if len(text) > limits.max_text_chars:
            raise ApiError(413, f"query text over {limits.max_text_chars} characters")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(
        title="mrl",
        version=__version__,
        lifespan=lifespan,
        description="Two-pass Matryoshka search: ANN shortlist on a short prefix, exact rerank on full vectors.",
    )
    app.state.batcher = batcher

    @app.middleware("http")
    async def guard(request: Request, call_next):
        endpoint = request.url.path if not request.url.path.startswith("/documents/") else "/documents/{id}"
        started = time.perf_counter()
        try:
            if api_key_hashes and endpoint not in ("/", "/health"):
                header = request.headers.get("authorization", "")
                token = header[7:] if header.lower().startswith("bearer ") else None
                if not key_ok(token, api_key_hashes):
                    raise ApiError(401, "missing or wrong API key (send 'Authorization: Bearer <key>')")
            length = request.headers.get("content-length")
            if length and length.isdigit() and int(length) > limits.max_body_bytes:
                raise ApiError(413, f"request body over {limits.max_body_bytes} bytes")
            response = await call_next(request)
        except ApiError as exc:
            response = exc.response(request.url.path)
        requests_total.labels(endpoint, str(response.status_code)).inc()
        latency.labels(endpoint).observe(time.perf_counter() - started)
        return response

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return exc.response(request.url.path)

    @app.exception_handler(Unavailable)
    async def unavailable(request: Request, exc: Unavailable):  # raised where no route turns it into an ApiError
        return refused(exc, 503).response(request.url.path)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.exception("internal error on %s", request.url.path)
        return JSONResponse({"error": "internal error"}, status_code=500)

    async def read_json(request: Request) -> dict:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > limits.max_body_bytes:
                raise ApiError(413, f"request body over {limits.max_body_bytes} bytes")
        try:
            data = json.loads(body or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"malformed JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ApiError(422, "request body must be a JSON object")
        return data

    async def parse(request: Request, model: type[BaseModel]):
        data = await read_json(request)
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise ApiError(422, f"{where}: {first['msg']} ({len(exc.errors())} problem(s))") from None

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        return (files("mrl.serve") / "static" / "index.html").read_text()

    @app.get("/health")
    async def health() -> dict:
        # to a thread: a sharded index asks its shards, which may be replicas on other machines
        documents, generation = await asyncio.to_thread(lambda: (index.count, index.generation))
        return {"status": "ok", "documents": documents, "generation": generation}

    @app.get("/stats")
    async def stats() -> dict:
        return {**await asyncio.to_thread(index.stats), "auth": bool(api_key_hashes), "limits": limits.__dict__}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/search", openapi_extra=body_schema(SearchRequest))
    async def search(request: Request) -> dict:
        """Search with text or vectors; a single query returns a list of hits, a batch a list of lists."""
        req: SearchRequest = await parse(request, SearchRequest)
        if (req.query is None) == (req.vector is None):
            raise ApiError(422, "give exactly one of 'query' (text) or 'vector'")
        if req.vector is not None and not req.vector:
            raise ApiError(422, "'vector' is empty")
        await check_k(req.k)
        if req.shortlist is not None and not req.k <= req.shortlist <= limits.max_shortlist:
            raise ApiError(422, f"shortlist must be between k and {limits.max_shortlist}")
        if req.ann_search is not None and not 0 < req.ann_search <= 4096:
            raise ApiError(422, "ann_search must be between 1 and 4096")
        if req.target_recall is not None:
            tuned = await asyncio.to_thread(lambda: index.tuned) or {}
            if not 0 < req.target_recall <= 1:
                raise ApiError(422, "target_recall must be in (0, 1]")
            if tuned.get("target_recall", 0) < req.target_recall:
                raise ApiError(
                    409, f"index is tuned for recall {tuned.get('target_recall')}; run 'mrl index tune' first"
                )
        funnel = req.funnel or []
        if any(not index.prefix_dim < d < index.full_dim for d in funnel):
            raise ApiError(422, f"funnel dims must lie between {index.prefix_dim} and {index.full_dim}")
        try:
            where = parse_filter(req.filter)  # a malformed filter is refused before any encoding
        except FilterError as exc:
            raise ApiError(400, str(exc)) from None
        timings = SearchTimings()
        single = isinstance(req.query, str) or (req.vector is not None and not isinstance(req.vector[0], list))
        if req.query is not None:
            texts = [req.query] if isinstance(req.query, str) else req.query
            if not texts or len(texts) > limits.max_batch:
                raise ApiError(422, f"between 1 and {limits.max_batch} queries per request")
            for t in texts:
                check_query_text(t)
            t0 = time.perf_counter()
            vectors = await batcher(texts)
            timings.encode = time.perf_counter() - t0
        else:
            ragged = [] if single else [i for i, row in enumerate(req.vector) if len(row) != len(req.vector[0])]
            if ragged:
                i = ragged[0]
                raise ApiError(422, f"vector[{i}] has width {len(req.vector[i])}, vector[0] {len(req.vector[0])}")
            with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, which unit_vectors refuses
                vectors = np.asarray(req.vector if not single else [req.vector], dtype=np.float32)
            if not len(vectors) or len(vectors) > limits.max_batch:
                raise ApiError(422, f"between 1 and {limits.max_batch} vectors per request")
        try:
            unit = unit_vectors(vectors, index.full_dim, "vector")
            adaptive = index.adaptive_setting(req.adaptive)
            keys, scores = await asyncio.to_thread(
                index.search_keys,
                unit,
                req.k,
                req.shortlist,
                req.ann_search,
                funnel,
                timings,
                where,
                adaptive,
            )
            found = await asyncio.to_thread(index.hits_for, keys, scores)
        except FilterError as exc:  # found when the filter met the data: a range on a text field
            raise ApiError(400, str(exc)) from None
        except MrlError as exc:
            raise refused(exc, 422) from None
        for name in ("encode", "shortlist", "rerank"):
            stage.labels(name).observe(getattr(timings, name))
        hits = [[h.__dict__ for h in hs] for hs in found]
        answer = {
            "results": hits[0] if single else hits,
            "timings_ms": {n: round(getattr(timings, n) * 1e3, 3) for n in ("encode", "shortlist", "rerank")},
            "prefix_dim": index.prefix_dim,
        }
        if timings.widths is not None:
            widths = [w.as_dict() for w in timings.widths]
            answer["widths"] = widths[0] if single else widths
        return answer

    @app.post("/search/widths", openapi_extra=body_schema(WidthsRequest))
    async def search_widths(request: Request) -> dict:
        """One query's top k at each prefix width and at full width over the same candidates, with overlap@k against
        full width and where adaptive width stopped (embedded index): the page's side-by-side view."""
        req: WidthsRequest = await parse(request, WidthsRequest)
        check_query_text(req.query)
        await check_k(req.k)
        if not 0 < len(req.dims) <= 8:
            raise ApiError(422, "between 1 and 8 dims")
        vectors = await batcher([req.query])
        try:
            view = await asyncio.to_thread(index.compare_widths, vectors[0], req.k, req.dims)
        except MrlError as exc:
            raise refused(exc, 422) from None
        for column in view["columns"]:
            column["hits"] = [h.__dict__ for h in column["hits"]]
        return view

    @app.post("/documents", openapi_extra=body_schema(UpsertRequest))
    async def upsert(request: Request) -> dict:
        """Add or replace documents (encoded here); the response comes after the write is durable."""
        req: UpsertRequest = await parse(request, UpsertRequest)
        if not 0 < len(req.documents) <= limits.max_documents:
            raise ApiError(422, f"between 1 and {limits.max_documents} documents per request")
        for d in req.documents:
            if not d.id.strip() or not d.text.strip():
                raise ApiError(422, f"document '{d.id}': id and text must be non-empty")
            if len(d.text) > limits.max_text_chars * 10:
                raise ApiError(413, f"document '{d.id}': text over {limits.max_text_chars * 10} characters")
        docs = [Document(d.id, d.text, d.metadata) for d in req.documents]
        t0 = time.perf_counter()
        async with write_lock:
            try:
                count = await asyncio.to_thread(index.upsert, docs)
            except MrlError as exc:
                raise refused(exc, 422) from None
        stage.labels("write").observe(time.perf_counter() - t0)
        documents, generation = await asyncio.to_thread(lambda: (index.count, index.generation))
        return {"upserted": count, "documents": documents, "generation": generation}

    @app.get("/documents/{doc_id}")
    async def get_document(doc_id: str) -> dict:
        found = await asyncio.to_thread(index.get, [doc_id])
        if doc_id not in found:
            raise ApiError(404, f"unknown id: {doc_id}")
        return found[doc_id].__dict__

    @app.delete("/documents/{doc_id}")
    async def delete(doc_id: str) -> dict:
        async with write_lock:
            try:
                await asyncio.to_thread(index.delete, [doc_id])
            except MrlError as exc:
                raise refused(exc, 404) from None
        return {"deleted": doc_id, "documents": await asyncio.to_thread(lambda: index.count)}

    add_openai_routes(app, index, batcher, read_json, max_inputs=limits.max_documents, max_chars=limits.max_text_chars)
    return app
