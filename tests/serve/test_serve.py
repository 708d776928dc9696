"""The HTTP API with the real model and a real index: behaviour, limits, auth, crash safety, the web page."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from mrl.index import Index
from mrl.serve import Limits, create_app
from mrl.serve.auth import hash_key, load_key_hashes, new_key


@pytest.fixture(scope="module")
def built(model, data_dir, tmp_path_factory):
    from conftest import encoded_subset

    return encoded_subset(model, data_dir, tmp_path_factory.mktemp("sf"), 10, 60)


@pytest.fixture()
def index(built, model, tmp_path):
    _, docs, vectors = built
    return Index.build(tmp_path / "idx", vectors, docs, model="default", prefix_dim=64, loaded_model=model)


@pytest.fixture()
def client(index):
    with TestClient(create_app(index, limits=Limits(max_body_bytes=200_000))) as c:
        yield c


def test_search_text_vector_batch_and_timings(client, built):
    data, docs, vectors = built
    query = next(iter(data.queries.values()))
    r = client.post("/search", json={"query": query, "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["results"]) == 5 and {"id", "score", "text", "metadata"} <= set(body["results"][0])
    assert set(body["timings_ms"]) == {"encode", "shortlist", "rerank"} and body["timings_ms"]["encode"] > 0
    batch = client.post("/search", json={"query": [query, "aspirin"], "k": 3}).json()["results"]
    assert len(batch) == 2 and [h["id"] for h in batch[0]] == [h["id"] for h in body["results"][:3]]
    by_vec = client.post("/search", json={"vector": vectors[4].tolist(), "k": 1}).json()["results"]
    assert by_vec[0]["id"] == docs[4].id
    funnel = client.post("/search", json={"query": query, "k": 5, "funnel": [128], "shortlist": 50}).json()
    assert [h["id"] for h in funnel["results"]][:3] == [h["id"] for h in body["results"]][:3]


def test_adaptive_search_says_what_each_query_read(index, built):
    from mrl.index.tuning import tune

    data, _, _ = built
    tuned = tune(index, 0.9, k=5, sample=40)["adaptive"]
    queries = list(data.queries.values())[:3]
    with TestClient(create_app(index)) as c:
        body = c.post("/search", json={"query": queries, "k": 5, "adaptive": True}).json()
        fixed = c.post("/search", json={"query": queries, "k": 5}).json()
    assert len(body["results"]) == 3 and len(body["widths"]) == 3 and "widths" not in fixed
    for used in body["widths"]:
        assert used["dims"] in (tuned["width"], 384) and (used["widened"] > 0) == (used["dims"] == 384)
        assert used["rerank_bytes"] > 0 and used["fixed_bytes"] == used["candidates"] * 384 * 4


def test_widths_view_over_http(client):
    body = client.post("/search/widths", json={"query": "vitamin D and bone fractures", "k": 3}).json()
    assert [c["dims"] for c in body["columns"]] == [32, 64, 128, 384] and len(body["columns"][0]["hits"]) == 3
    r = client.post("/search/widths", json={"query": "vitamin D", "dims": [384]})
    assert r.status_code == 422 and "is not between 1 and 383" in r.json()["error"]
    assert client.post("/search/widths", json={"query": " "}).status_code == 422


def test_upsert_get_delete(client):
    r = client.post(
        "/documents", json={"documents": [{"id": "n1", "text": "Vitamin D and hip fractures", "metadata": {"y": 1}}]}
    )
    assert r.status_code == 200, r.text
    assert client.get("/documents/n1").json() == {
        "id": "n1",
        "text": "Vitamin D and hip fractures",
        "metadata": {"y": 1},
    }
    hits = client.post("/search", json={"query": "vitamin D hip fractures", "k": 1}).json()["results"]
    assert hits[0]["id"] == "n1"
    assert client.delete("/documents/n1").status_code == 200
    assert client.get("/documents/n1").status_code == 404
    r = client.delete("/documents/n1")
    assert r.status_code == 404 and "unknown ids: n1" in r.json()["error"]


@pytest.mark.parametrize(
    ("kwargs", "status", "needle"),
    [
        ({"content": b'{"query": "x", "k": '}, 400, "malformed JSON"),
        ({"content": b"[1, 2]"}, 422, "JSON object"),
        ({"json": {"query": 5}}, 422, "query"),
        ({"json": {"query": "x", "k": "ten"}}, 422, "k"),
        ({"json": {"query": "x", "colour": "red"}}, 422, "colour"),
        ({"json": {"query": ""}}, 422, "empty"),
        ({"json": {"query": "x" * 100_000}}, 413, "characters"),
        ({"json": {"query": "x", "k": 0}}, 422, "k must be"),
        ({"json": {"query": "x", "k": 100_000}}, 422, "k must be"),
        ({"json": {"query": "x", "vector": [0.1]}}, 422, "exactly one"),
        ({"json": {"vector": [0.1, 0.2]}}, 422, "width"),
        ({"json": {"vector": [[0.1] * 384, [0.1] * 383]}}, 422, "vector[1] has width 383, vector[0] 384"),
        ({"content": json.dumps({"vector": [float("nan")] * 384}).encode()}, 422, "NaN"),
        ({"content": b"{" + b" " * 300_000 + b"}"}, 413, "bytes"),
        ({"json": {"query": "x", "target_recall": 0.99}}, 409, "mrl index tune"),
        ({"json": {"query": "x", "adaptive": "sometimes"}}, 422, "adaptive"),
    ],
)
def test_bad_search_requests_get_4xx_and_server_keeps_serving(client, kwargs, status, needle):
    headers = {"content-type": "application/json"}
    r = client.post("/search", headers=headers, **kwargs)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]
    assert client.get("/health").status_code == 200


def test_bad_upserts(client):
    assert client.post("/documents", json={"documents": []}).status_code == 422
    assert client.post("/documents", json={"documents": [{"id": "a"}]}).status_code == 422
    r = client.post("/documents", json={"documents": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]})
    assert r.status_code == 422 and "duplicate ids: a" in r.json()["error"]


def test_metrics_and_stats(client):
    client.post("/search", json={"query": "vitamin D", "k": 3})
    client.post("/search", json={"query": ""})
    text = client.get("/metrics").text
    assert 'mrl_stage_seconds_count{stage="rerank"}' in text
    assert 'mrl_requests_total{endpoint="/search",status="422"}' in text
    stats = client.get("/stats").json()
    assert stats["full_dim"] == 384 and stats["auth"] is False


def test_api_keys(index, tmp_path):
    keys = tmp_path / "keys.txt"
    key = new_key(keys)
    assert key not in keys.read_text() and hash_key(key) in keys.read_text()
    with TestClient(create_app(index, load_key_hashes(keys))) as c:
        assert c.get("/health").status_code == 200  # liveness stays open
        assert c.post("/search", json={"query": "x"}).status_code == 401
        bad = c.post("/search", json={"query": "x"}, headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401 and "API key" in bad.json()["error"]
        ok = c.post("/search", json={"query": "vitamin", "k": 2}, headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200
        assert c.get("/metrics").status_code == 401


def test_refuses_public_bind_without_keys(index):
    proc = subprocess.run(
        [sys.executable, "-m", "mrl.cli", "serve", str(index.folder), "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "without --api-key-file" in proc.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(folder: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mrl.cli", "serve", str(folder), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"server did not start: {proc.stderr.read()}")


def test_kill_9_during_upserts_keeps_every_acknowledged_write(index):
    folder = index.folder
    port = _free_port()
    server = _start_server(folder, port)
    acked: list[str] = []
    stop = threading.Event()

    def writer(w: int):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            i = 0
            while not stop.is_set():
                doc_id = f"w{w}-{i}"
                try:
                    r = c.post("/documents", json={"documents": [{"id": doc_id, "text": f"note {w} {i} on vitamin D"}]})
                except httpx.HTTPError:
                    return  # the server died mid-request: not acknowledged
                if r.status_code == 200:
                    acked.append(doc_id)
                i += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    while len(acked) < 8 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(server.pid, signal.SIGKILL)
    server.wait()
    stop.set()
    for t in threads:
        t.join()
    assert len(acked) >= 8
    server = _start_server(folder, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
            missing = [d for d in acked if c.get(f"/documents/{d}").status_code != 200]
            assert not missing
            assert c.post("/search", json={"query": "vitamin D", "k": 3}).status_code == 200
    finally:
        server.terminate()
        server.wait()


@pytest.mark.skipif(not shutil.which("chromium"), reason="Debian chromium not installed (make test installs it)")
def test_web_page_in_headless_chromium(index, tmp_path):
    from playwright.sync_api import sync_playwright

    port = _free_port()
    server = _start_server(index.folder, port)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=shutil.which("chromium"),
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    "--disable-quic",
                ],
            )
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("document.getElementById('about').textContent.includes('documents')")
            page.fill("#q", "does vitamin D prevent fractures")
            page.select_option("#funnel", "128")
            page.fill("#k", "5")
            page.check("#widths")
            page.click("#go")
            page.wait_for_selector(".hit")
            assert page.locator(".hit").count() == 5
            assert "shortlist" in page.text_content("#timings")
            page.wait_for_selector("table.widths")
            heads = page.locator("table.widths th").all_text_contents()
            assert [h.split(" dims")[0] for h in heads] == ["32", "64", "128", "384"] and "overlap@5 1.00" in heads[-1]
            assert page.locator("table.widths tr").count() == 6 and page.locator("table.widths th.stopped").count() == 1
            assert "adaptive width:" in page.text_content("#adaptive")
            page.screenshot(path=str(tmp_path / "page.png"))
            browser.close()
    finally:
        server.terminate()
        server.wait()
