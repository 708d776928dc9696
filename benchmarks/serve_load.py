"""Load test: 32 concurrent clients on loopback for 60 s, mixed searches and upserts.

Builds an index of the SciFact corpus (embeddings from the cache when present), starts `mrl serve`
as a separate process, runs the clients, then checks that every acknowledged upsert is readable.

    python benchmarks/serve_load.py [--clients 32] [--seconds 60] [--write-fraction 0.1] [--model default]

Writes benchmarks/results/serve_load.json and prints a table: QPS, p50/p99 per endpoint, errors.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import httpx
import numpy as np
from rich.table import Table

from mrl.data import Document, load_beir
from mrl.encode import EmbeddingCache
from mrl.eval.tables import console
from mrl.index import Index
from mrl.model import load_model
from mrl.provenance import write_json

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def client(c: httpx.AsyncClient, n: int, queries: list[str], until: float, write_fraction: float, log: dict):
    rng = random.Random(n)
    i = 0
    while time.monotonic() < until:
        if rng.random() < write_fraction:
            doc_id = f"load-{n}-{i}"
            body = {"documents": [{"id": doc_id, "text": f"{rng.choice(queries)} (note {n}-{i})"}]}
            endpoint, t0 = "POST /documents", time.perf_counter()
            try:
                r = await c.post("/documents", json=body)
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                log["acked"].append(doc_id)
        else:
            endpoint, t0 = "POST /search", time.perf_counter()
            try:
                r = await c.post("/search", json={"query": rng.choice(queries), "k": 10})
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
        log.setdefault(endpoint, []).append(time.perf_counter() - t0)
        if not ok:
            log["errors"] += 1
        i += 1


async def run_load(base: str, clients: int, seconds: float, write_fraction: float, queries: list[str]) -> dict:
    log: dict = {"acked": [], "errors": 0}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as c:
        until = time.monotonic() + seconds
        started = time.perf_counter()
        await asyncio.gather(*(client(c, n, queries, until, write_fraction, log) for n in range(clients)))
        log["elapsed"] = time.perf_counter() - started
    return log


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--write-fraction", type=float, default=0.1)
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", default=os.environ.get("MRL_DATA", str(ROOT.parent / "shared" / "data")))
    args = ap.parse_args()

    data = load_beir(Path(args.data) / "scifact", "test")
    model = load_model(args.model)
    vectors, _ = EmbeddingCache().get_or_encode(model, data.corpus_fingerprint(), list(data.corpus.values()))
    queries = list(load_beir(Path(args.data) / "scifact", "train").queries.values())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "idx"
        Index.build(
            folder,
            vectors,
            [Document(i, t) for i, t in data.corpus.items()],
            model=getattr(model, "mrl_source", args.model),
            prefix_dim=64,
        ).close()
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "mrl.cli", "serve", str(folder), "--port", str(port)],
            stderr=subprocess.PIPE,
            text=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                try:
                    if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            log = asyncio.run(run_load(base, args.clients, args.seconds, args.write_fraction, queries))
            with httpx.Client(base_url=base, timeout=30) as c:
                unreadable = [d for d in log["acked"] if c.get(f"/documents/{d}").status_code != 200]
                metrics = c.get("/metrics").text
        finally:
            server.terminate()
            server.wait()

    result = {
        "clients": args.clients,
        "seconds": round(log["elapsed"], 1),
        "write_fraction": args.write_fraction,
        "documents_at_start": len(data.corpus),
        "errors": log["errors"],
        "acked_upserts": len(log["acked"]),
        "acked_upserts_unreadable": len(unreadable),
        "endpoints": {},
    }
    total = 0
    for endpoint in ("POST /search", "POST /documents"):
        lat = np.array(log.get(endpoint, [0.0])) * 1e3
        total += len(log.get(endpoint, []))
        result["endpoints"][endpoint] = {
            "requests": len(log.get(endpoint, [])),
            "qps": len(log.get(endpoint, [])) / log["elapsed"],
            "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)),
        }
    result["total_qps"] = total / log["elapsed"]
    sums = {
        line.split()[0]: float(line.split()[1])
        for line in metrics.splitlines()
        if line.startswith("mrl_encoder_batch_size_")
    }
    count = sums.get("mrl_encoder_batch_size_count", 0)
    result["encoder_mean_batch_size"] = sums.get("mrl_encoder_batch_size_sum", 0) / count if count else None
    write_json(result, ROOT / "benchmarks" / "results" / "serve_load.json")
    table = Table(
        title=f"{args.clients} clients, {result['seconds']} s, {result['errors']} errors, "
        f"{result['acked_upserts']} acked upserts ({result['acked_upserts_unreadable']} unreadable), "
        f"mean encoder batch {result['encoder_mean_batch_size'] or 0:.1f} queries"
    )
    for col in ("endpoint", "requests", "QPS", "p50 ms", "p99 ms"):
        table.add_column(col, justify="right")
    for endpoint, e in result["endpoints"].items():
        table.add_row(endpoint, str(e["requests"]), f"{e['qps']:.1f}", f"{e['p50_ms']:.1f}", f"{e['p99_ms']:.1f}")
    console().print(table)


if __name__ == "__main__":
    main()
