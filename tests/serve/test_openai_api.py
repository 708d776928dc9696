"""The OpenAI-compatible embeddings API, driven by the official ``openai`` client against a live ``mrl serve``."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import openai
import pytest
from sentence_transformers import SentenceTransformer
from sentence_transformers.util.quantization import quantize_embeddings

from mrl.index import Index
from mrl.serve.auth import new_key

TEXTS = ["Vitamin D supplements and hip fractures", "aspirin lowers the risk of stroke", "a cat sat on the mat"]


@pytest.fixture(scope="module")
def server(model, data_dir, tmp_path_factory):
    """A real server over a rotated index of real SciFact abstracts, with an API key."""
    from conftest import encoded_subset

    folder = tmp_path_factory.mktemp("oa")
    _, docs, vectors = encoded_subset(model, data_dir, folder / "sf", 10, 60)
    Index.build(folder / "idx", vectors, docs, model="default", loaded_model=model)
    key = new_key(folder / "keys.txt")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mrl.cli",
            "serve",
            str(folder / "idx"),
            "--port",
            str(port),
            "--api-key-file",
            str(folder / "keys.txt"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    else:
        proc.kill()
        raise RuntimeError(f"server did not start: {proc.stderr.read()}")
    yield base, key, vectors
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def reference(model):
    return SentenceTransformer(model.mrl_source)


def test_embeddings_equal_sentence_transformers_truncated_and_normalized(server, reference):
    base, key, _ = server
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    assert [m.id for m in client.models.list().data] == ["all-MiniLM-L6-v2"]
    for dims in (64, 128, None):
        kwargs = {"dimensions": dims} if dims else {}
        out = client.embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS, **kwargs)  # the client asks for base64
        got = np.array([d.embedding for d in sorted(out.data, key=lambda d: d.index)])
        want = reference.encode(TEXTS, truncate_dim=dims, normalize_embeddings=True)
        assert got.shape == want.shape and np.abs(got - want).max() < 1e-5
        assert out.usage.prompt_tokens > len(TEXTS)
    one = client.embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS[0], dimensions=32, encoding_format="float")
    want = reference.encode([TEXTS[0]], truncate_dim=32, normalize_embeddings=True)[0]
    assert np.abs(np.array(one.data[0].embedding) - want).max() < 1e-5


def test_int8_and_binary_outputs(server, reference):
    base, key, _ = server
    headers = {"Authorization": f"Bearer {key}"}

    def ask(fmt: str) -> np.ndarray:
        body = {"model": "all-MiniLM-L6-v2", "input": TEXTS, "dimensions": 64, "encoding_format": fmt}
        r = httpx.post(f"{base}/v1/embeddings", json=body, headers=headers, timeout=60)
        assert r.status_code == 200, r.text
        return np.array([d["embedding"] for d in r.json()["data"]])

    floats = reference.encode(TEXTS, truncate_dim=64, normalize_embeddings=True)
    assert np.array_equal(ask("binary"), quantize_embeddings(floats, precision="binary"))
    assert np.array_equal(ask("ubinary"), quantize_embeddings(floats, precision="ubinary"))
    codes = ask("int8")
    assert codes.shape == (3, 64) and codes.min() >= -128 and codes.max() <= 127
    assert np.array_equal(codes, ask("int8"))  # calibrated once: the same codes every time
    # the codes keep the ranking of the float vectors: the first text is closest to itself
    assert (codes @ codes[0]).argmax() == 0


@pytest.mark.parametrize(
    ("kwargs", "error", "param"),
    [
        ({"model": "text-embedding-3-small", "input": "x"}, openai.NotFoundError, "model"),
        ({"model": "all-MiniLM-L6-v2", "input": "x", "dimensions": 0}, openai.BadRequestError, "dimensions"),
        ({"model": "all-MiniLM-L6-v2", "input": "x", "dimensions": 385}, openai.BadRequestError, "dimensions"),
        ({"model": "all-MiniLM-L6-v2", "input": ["ok", "  "]}, openai.BadRequestError, "input"),
        ({"model": "all-MiniLM-L6-v2", "input": [[1, 2, 3]]}, openai.BadRequestError, "input"),
    ],
)
def test_bad_requests_get_openai_errors(server, kwargs, error, param):
    base, key, _ = server
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    with pytest.raises(error) as info:
        client.embeddings.create(**kwargs)
    assert info.value.body["param"] == param and info.value.body["type"] == "invalid_request_error"


def test_wrong_key_is_an_authentication_error(server):
    base, _, _ = server
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="not-a-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.embeddings.create(model="all-MiniLM-L6-v2", input="x")
