"""Building and serving a sharded index on a real local Ray cluster: a head and two worker nodes, each its own raylet.

Faults are real: a replica's process is killed with SIGKILL, a worker node is removed (its raylet and workers die),
the build's driver is killed and the same command run again. Loops are bounded in count; nothing is timed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from conftest import run_mrl, unrotated

from mrl.data import load_documents
from mrl.errors import MrlError
from mrl.index import build_index, open_index
from mrl.index.shards import SHARDS_FILE, shard_of
from mrl.vectors.prefix import prefix

try:
    import ray
    from ray.cluster_utils import Cluster
except ImportError:
    if os.environ.get("CI"):  # make test installs mrl[ray]: under CI a missing Ray is a failure, not a skip
        raise
    pytest.skip("Ray is not installed (pip install 'mrl[ray]'; make test installs it)", allow_module_level=True)

WORKER_CPUS = 2  # logical CPUs a worker node offers: one node alone must hold every replica after the other dies


@pytest.fixture(scope="module")
def cluster():
    """A head node with no CPUs (it runs Ray's control plane and Serve's controller) and two worker nodes."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    for _ in range(2):
        cluster.add_node(num_cpus=WORKER_CPUS)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    yield cluster
    try:
        from ray import serve

        serve.shutdown()
    finally:
        ray.shutdown()
        cluster.shutdown()


def worker_nodes(cluster) -> list:
    return [node for node in cluster.list_all_nodes() if node is not cluster.head_node]


def replace_node(cluster, node) -> None:
    """Kill a worker node (its raylet and every worker process on it) and start a fresh one in its place."""
    cluster.remove_node(node, allow_graceful=False)
    cluster.add_node(num_cpus=WORKER_CPUS)
    cluster.wait_for_nodes()


@pytest.fixture(scope="module")
def reference(scifact_400, model, tmp_path_factory):
    """The corpus, encoded in this process, and its single-machine index: what a distributed build must equal."""
    docs = list(load_documents(scifact_400 / "corpus.jsonl"))
    vectors = model.encode([d.text for d in docs], batch_size=64, convert_to_numpy=True)
    single = build_index(tmp_path_factory.mktemp("single") / "idx", vectors, docs, model="default", prefix_dim=64)
    yield docs, vectors, single
    single.close()


def assert_equals_single_build(folder, docs, vectors, shards: int) -> None:
    """Same ids, each in the shard its id hashes to, vectors within 1e-5 of the single build's (model basis)."""
    index = open_index(folder)
    assert index.count == len(docs) and index.layout.shards == shards
    position = {d.id: i for i, d in enumerate(docs)}
    seen: list[str] = []
    for shard, client in enumerate(index.clients):
        rows = np.flatnonzero(~client.index.deleted)
        ids = [client.index.docs.fetch([int(r)])[int(r)][0] for r in rows]
        assert all(shard_of(i, shards) == shard for i in ids)
        expected = prefix(vectors[[position[i] for i in ids]], vectors.shape[1])
        assert np.abs(unrotated(client.index, rows) - expected).max() < 1e-5
        seen += ids
    assert sorted(seen) == sorted(position)  # every document exactly once
    assert not (folder / ".staging").exists()
    index.close()


def test_a_build_survives_a_worker_node_dying_and_equals_the_single_build(cluster, reference, tmp_path):
    from mrl.cluster.build import build_on_ray

    docs, vectors, _ = reference
    folder = tmp_path / "idx"
    done = folder / ".staging" / "done"
    failure: list[BaseException] = []

    def build() -> None:
        try:
            build_on_ray(
                folder, docs, model="default", shards=3, address=cluster.address, block_rows=16, batch_size=8,
                prefix_dim=64, progress=False,
            )  # fmt: skip
        except BaseException as exc:  # handed to the test thread
            failure.append(exc)

    thread = threading.Thread(target=build)
    thread.start()
    for _ in range(1200):  # until the first blocks are staged (bounded: 10 minutes)
        if (done.is_dir() and len(list(done.iterdir())) >= 2) or not thread.is_alive():
            break
        time.sleep(0.5)
    staged = len(list(done.iterdir()))
    blocks = -(-len(docs) // 16)
    assert 2 <= staged < blocks, "the node must die while the encoding runs"
    replace_node(cluster, worker_nodes(cluster)[0])
    thread.join(timeout=900)
    assert not thread.is_alive() and not failure, failure
    assert_equals_single_build(folder, docs, vectors, shards=3)


def test_a_killed_driver_resumes_with_the_same_command(cluster, reference, scifact_400, tmp_path):
    docs, vectors, _ = reference
    folder = tmp_path / "idx"
    command = [
        sys.executable, "-m", "mrl.cli", "index", "build", str(folder), "--corpus", str(scifact_400 / "corpus.jsonl"),
        "--prefix-dim", "64", "--shards", "2", "--ray", cluster.address, "--chunk-rows", "16", "--batch-size", "8",
    ]  # fmt: skip
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = folder / ".staging" / "done"
    for _ in range(1200):
        if (done.is_dir() and len(list(done.iterdir())) >= 3) or first.poll() is not None:
            break
        time.sleep(0.5)
    first.send_signal(signal.SIGKILL)
    first.wait()
    staged = len(list(done.iterdir()))
    assert 3 <= staged < -(-len(docs) // 16) and not (folder / SHARDS_FILE).exists()
    plan = json.loads((folder / ".staging" / "plan.json").read_text())
    again = run_mrl(*command[3:])
    assert again.returncode == 0, again.stderr
    assert json.loads((folder / SHARDS_FILE).read_text())["build_id"] == plan["build_id"]  # resumed, not restarted
    assert_equals_single_build(folder, docs, vectors, shards=2)
    # the same command once more refuses to overwrite the finished index
    refused = run_mrl(*command[3:])
    assert refused.returncode == 2 and "folder exists and is not empty" in refused.stderr


@pytest.fixture(scope="module")
def served(cluster, reference, tmp_path_factory):
    """The corpus in 2 shards (built in this process), served as 2 replicas of each shard, and its local twin."""
    from mrl.cluster.serving import deploy, undeploy

    docs, vectors, _ = reference
    folder = tmp_path_factory.mktemp("served") / "idx"
    build_index(folder, vectors, docs, model="default", prefix_dim=64, shards=2).close()
    router = deploy(folder, replicas=2, address=cluster.address, cpus_per_replica=0.5, retry_window_s=60)
    yield folder, router
    undeploy(router)


def replica_pids(client, calls: int = 40) -> dict[int, str]:
    """pid -> node of the replicas that answered ``calls`` stats calls (the router spreads calls over replicas)."""
    seen = {}
    for _ in range(calls):
        replica = client.stats()["replica"]
        seen[replica["pid"]] = replica["node"]
    return seen


def answers(index, queries) -> list[list[tuple[str, float]]]:
    """Each query's top 10 (id, score), a query at a time: the same shapes, hence the same float sums, anywhere."""
    return [[(h.id, h.score) for h in index.search(query, k=10)] for query in queries]


def test_queries_survive_a_killed_replica_and_a_killed_node(cluster, served, reference):
    folder, router = served
    _, vectors, _ = reference
    local = open_index(folder)
    queries = prefix(vectors[:30] + 0.05 * vectors[30:60], vectors.shape[1])
    expected = answers(local, queries)
    assert answers(router, queries) == expected
    pids = replica_pids(router.clients[0])
    assert len(pids) == 2, "both replicas of shard 0 answer"
    os.kill(next(iter(pids)), signal.SIGKILL)
    for q in range(len(queries)):  # every query must come back whole and right
        assert answers(router, queries[q : q + 1]) == expected[q : q + 1]
    node_id = next(iter(replica_pids(router.clients[1]).values()))
    (node,) = [n for n in worker_nodes(cluster) if n.node_id == node_id]
    replace_node(cluster, node)
    for q in range(len(queries)):
        assert answers(router, queries[q : q + 1]) == expected[q : q + 1]
    local.close()


def test_acknowledged_writes_survive_kills_during_writes(cluster, served, reference, model):
    folder, router = served
    docs, vectors, _ = reference
    from mrl.data import Document

    acked: list[str] = []
    for i in range(16):
        if i == 4:  # a replica of the shard this write goes to dies just before it
            owner = router.clients[shard_of(f"w-{i}", 2)]
            os.kill(next(iter(replica_pids(owner))), signal.SIGKILL)
        if i == 10:
            replace_node(cluster, worker_nodes(cluster)[0])
        router.upsert([Document(f"w-{i}", f"written {i}", {"n": -i})], vectors[i : i + 1] + 0.01)
        acked.append(f"w-{i}")
    assert set(router.get(acked)) == set(acked)
    on_disk = open_index(folder)  # read from the shards' folders, not from any replica's memory
    assert set(on_disk.get(acked)) == set(acked) and on_disk.count == len(docs) + len(acked)
    on_disk.close()
    hit = router.search(prefix(vectors[7:8] + 0.01, vectors.shape[1])[0], k=1)[0]
    assert hit.id == "w-7"


def test_a_shard_with_no_live_replica_answers_503_naming_it(served, reference):
    from fastapi.testclient import TestClient
    from ray import serve

    from mrl.cluster.serving import app_name
    from mrl.serve import create_app

    _, router = served
    _, vectors, _ = reference
    client = TestClient(create_app(router))
    vector = prefix(vectors[:1], vectors.shape[1])[0].tolist()
    assert client.post("/search", json={"vector": vector, "k": 5}).status_code == 200
    serve.delete(app_name(router.layout, 1))
    router.clients[1].retry_window_s = 2
    response = client.post("/search", json={"vector": vector, "k": 5})
    assert response.status_code == 503
    assert "shard 1" in response.json()["error"] and "no live replica" in response.json()["error"]
    with pytest.raises(MrlError, match="shard 1"):
        router.get(["w-1", "w-2", "w-3"])


def test_serving_refuses_a_foreign_shard_before_deploying(cluster, reference, tmp_path):
    from mrl.cluster.serving import deploy

    docs, vectors, _ = reference
    for name in ("a", "b"):
        build_index(tmp_path / name, vectors, docs, model="default", prefix_dim=64, shards=2).close()
    import shutil

    shutil.rmtree(tmp_path / "a" / "shard-00")
    shutil.copytree(tmp_path / "b" / "shard-00", tmp_path / "a" / "shard-00")
    with pytest.raises(MrlError, match=r"shard 0: .*another build"):
        deploy(tmp_path / "a", replicas=1, address=cluster.address)


def test_mrl_serve_with_ray_serves_the_same_api_and_removes_its_deployments_on_exit(cluster, reference, tmp_path):
    import socket

    import httpx
    from ray import serve

    docs, vectors, _ = reference
    build_index(tmp_path / "idx", vectors, docs, model="default", prefix_dim=64, shards=2).close()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "mrl.cli", "serve", str(tmp_path / "idx"), "--ray", cluster.address, "--replicas", "2",
         "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        for _ in range(600):  # bounded: 5 minutes for the model, the deployments and the server to come up
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
            assert server.poll() is None, server.stderr.read()
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/health").json()["documents"] == len(docs)
        hits = httpx.post(f"{base}/search", json={"query": docs[5].text[:200], "k": 3}, timeout=60).json()["results"]
        assert hits[0]["id"] == docs[5].id
        written = httpx.post(f"{base}/documents", json={"documents": [{"id": "http-1", "text": "a new claim"}]})
        assert written.status_code == 200 and httpx.get(f"{base}/documents/http-1").json()["text"] == "a new claim"
        stats = httpx.get(f"{base}/stats", timeout=60).json()
        assert stats["shards"] == 2 and len(stats["per_shard"]) == 2 and stats["documents"] == len(docs) + 1
        apps = set(serve.status().applications)
        assert sum(name.endswith(("-shard-0", "-shard-1")) for name in apps) >= 2
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=120)
    layout = json.loads((tmp_path / "idx" / SHARDS_FILE).read_text())
    assert not [name for name in serve.status().applications if layout["build_id"][:12] in name]
