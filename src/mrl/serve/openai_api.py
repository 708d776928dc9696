"""An OpenAI-compatible embeddings API: ``POST /v1/embeddings`` and ``GET /v1/models``.

Why: every RAG framework and most applications already speak OpenAI's embeddings API, so pointing them at
``mrl serve`` (``base_url=http://host:8000/v1``) needs no new client. ``dimensions`` is where Matryoshka
pays: it returns the re-normalized prefix of the model's vector (in the model's own basis, never the
index's rotated one), which for a Matryoshka model is a good short embedding by itself. Beyond OpenAI's
``float`` and ``base64`` encodings, ``int8``/``uint8`` (scalar quantization) and ``binary``/``ubinary``
(sign bits, packed) come from sentence-transformers' ``quantize_embeddings``; the int8 ranges are
calibrated once per dim on up to 10,000 of the served index's own vectors, so a restart gives the same codes.

Errors use OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, so clients raise their
usual exceptions.

Example::

    from openai import OpenAI

    client = OpenAI(base_url="http://localhost:8000/v1", api_key="<an mrl key>")
    out = client.embeddings.create(model="all-MiniLM-L6-v2", input=["vitamin D", "aspirin"], dimensions=64)
    len(out.data[0].embedding)   # 64, unit length
"""

from __future__ import annotations

import asyncio
import base64
import threading
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError

from mrl.index.interface import SearchIndex
from mrl.model import model_name
from mrl.train.calibration import stored_int8_ranges
from mrl.vectors.prefix import prefix

ENCODINGS = ("float", "base64", "int8", "uint8", "binary", "ubinary")
CALIBRATION_VECTORS = 10_000


class OpenAIError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        self.status, self.message, self.param, self.kind = status, message, param, kind

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": None}}
        return JSONResponse(body, status_code=self.status)


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: str | list[str] | list[int] | list[list[int]]
    model: str
    dimensions: int | None = None
    encoding_format: str = "float"
    user: str | None = None


class Calibration:
    """int8 ranges per dim: those stored with the model by ``mrl train`` (:mod:`mrl.calibration`), else fitted
    once on the index's own vectors (model basis) and kept, so a text always gets the same codes."""

    def __init__(self, index: SearchIndex):
        self.index = index
        self._ranges: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def ranges(self, dim: int) -> np.ndarray:
        with self._lock:
            if dim not in self._ranges:
                stored = stored_int8_ranges(self.index.model, dim)
                if stored is None:
                    sample = self.index.sample_vectors(min(self.index.count, CALIBRATION_VECTORS), seed=0)
                    unit = prefix(np.asarray(sample, dtype=np.float32), dim)
                    stored = np.stack([unit.min(axis=0), unit.max(axis=0)])
                self._ranges[dim] = stored
            return self._ranges[dim]


def encode_output(vectors: np.ndarray, encoding: str, calibration: Calibration) -> list:
    """Each row as the client asked: floats, base64 of little-endian float32, or quantized integers."""
    if encoding == "float":
        return [row.tolist() for row in vectors]
    if encoding == "base64":
        return [base64.b64encode(row.astype("<f4").tobytes()).decode() for row in vectors]
    from sentence_transformers.util.quantization import quantize_embeddings

    ranges = calibration.ranges(vectors.shape[1]) if encoding in ("int8", "uint8") else None
    return [row.tolist() for row in quantize_embeddings(vectors, precision=encoding, ranges=ranges)]


def add_openai_routes(app: FastAPI, index: SearchIndex, encode, parse_json, max_inputs: int, max_chars: int):
    """Register the two routes on ``app``; ``encode`` is the server's (micro-batched) text encoder."""
    calibration = Calibration(index)
    name = model_name(index.model_name)  # what clients pass as ``model``

    @app.exception_handler(OpenAIError)
    async def openai_error(request: Request, exc: OpenAIError):
        return exc.response()

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "mrl"}]}

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> dict[str, Any]:
        data = await parse_json(request)
        try:
            req = EmbeddingsRequest.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            param = ".".join(str(p) for p in first["loc"][:1]) or None
            raise OpenAIError(400, f"{param or 'body'}: {first['msg']}", param) from None
        if req.model not in (name, str(index.model_name)):
            raise OpenAIError(404, f"The model '{req.model}' does not exist; this server has '{name}'", "model")
        texts = [req.input] if isinstance(req.input, str) else req.input
        if not texts or not all(isinstance(t, str) for t in texts):
            message = "input must be a string or a non-empty list of strings (token ids are not supported)"
            raise OpenAIError(400, message, "input")
        if len(texts) > max_inputs:
            raise OpenAIError(400, f"at most {max_inputs} inputs per request", "input")
        for t in texts:
            if not t.strip():
                raise OpenAIError(400, "input contains an empty string", "input")
            if len(t) > max_chars:
                raise OpenAIError(400, f"an input is over {max_chars} characters", "input")
        width = index.full_dim
        dim = req.dimensions if req.dimensions is not None else width
        if not 0 < dim <= width:
            raise OpenAIError(400, f"dimensions must be between 1 and {width}", "dimensions")
        if req.encoding_format not in ENCODINGS:
            raise OpenAIError(400, f"encoding_format must be one of {', '.join(ENCODINGS)}", "encoding_format")
        vectors = prefix(await encode(texts), dim)  # the model's basis: encode never rotates
        out = await asyncio.to_thread(encode_output, vectors, req.encoding_format, calibration)
        tokens = sum(len(ids) for ids in index.model.tokenizer(texts)["input_ids"])
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(out)],
            "model": name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    return app
