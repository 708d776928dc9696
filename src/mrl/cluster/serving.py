"""Serving a sharded index on Ray Serve: each shard a deployment of replicas, one router in front.

Each shard is a Ray Serve deployment (:class:`ShardReplica`) of ``replicas`` copies, each opening the shard's folder.
Ray places them over the cluster's nodes and restarts a replica whose process or node dies. The router
(:class:`mrl.index.router.ShardedIndex` over :class:`RayShard` clients) runs in the process that serves HTTP
(``mrl serve --ray``): it encodes queries, sends the two-pass search to every shard at once, and merges by full
score. A call that meets a dead replica is retried on the others, and for ``retry_window_s`` while Ray replaces it;
a shard that has no live replica by then fails the request with :class:`mrl.errors.Unavailable` naming the shard
(HTTP 503), never a result with that shard's documents silently missing.

Writes go to one replica of the owning shard, which commits them to the shard's folder under its file lock (fsynced)
before the call returns; every replica picks up the new generation before its next read (:meth:`Index.refresh`),
so a write is read back from any replica once acknowledged. The replicas of a shard share its folder: on several
machines, a shared file system. A write whose replica died before answering is retried as an upsert of the same
documents, which is harmless if the first attempt had committed.

Example::

    from mrl.cluster.serving import deploy
    index = deploy("idx/big", replicas=2, address="auto")
    hits = index.search("does vitamin D prevent fractures", k=10)
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from mrl.cluster.connect import connect, ray_module
from mrl.errors import MrlError, Unavailable
from mrl.index.router import ShardAnswer, ShardClient, ShardedIndex, ShardServer
from mrl.index.shards import ShardLayout

RETRY_WINDOW_S = 30.0  # how long a shard may have no live replica (Ray restarting one) before a request fails
CALL_TIMEOUT_S = 30.0  # one call to one replica


class ShardReplica(ShardServer):
    """One replica of one shard (a Ray Serve deployment's class): the shard's embedded index, opened from its folder,
    reloading what another replica committed before every read."""

    def __init__(self, folder: str, shard: int, layout_root: str, io: str = "auto"):
        from mrl.index.embedded import Index

        ShardLayout.read(Path(layout_root)).check(Path(layout_root))  # a foreign or missing shard never serves
        super().__init__(shard, Index.open(folder, io=io), fresh_reads=True)

    def stats(self) -> dict:
        node = ray_module().get_runtime_context().get_node_id()
        return {**super().stats(), "replica": {"pid": os.getpid(), "node": node}}


def _retryable() -> tuple[type[BaseException], ...]:
    """Errors that mean "this replica could not answer", not "the request was wrong"."""
    ray = ray_module()
    from ray import serve

    return (
        ray.exceptions.RayActorError,
        ray.exceptions.ActorUnavailableError,
        ray.exceptions.GetTimeoutError,
        ray.exceptions.WorkerCrashedError,
        ray.exceptions.NodeDiedError,
        ray.exceptions.ObjectLostError,
        serve.exceptions.BackPressureError,
        serve.exceptions.DeploymentUnavailableError,
        serve.exceptions.RequestCancelledError,
        TimeoutError,
    )


class RayShard(ShardClient):
    """A shard served by a Ray Serve deployment: calls go to any live replica, retried for ``retry_window_s``."""

    def __init__(self, shard: int, handle, where: str, retry_window_s: float = RETRY_WINDOW_S):
        self.shard = shard
        self.handle = handle
        self.where = where
        self.retry_window_s = retry_window_s
        self.retries = 0  # calls that met a replica that could not answer, for the stats and the tests
        self._retryable = _retryable()

    def start(self, method: str, *args):
        """Send ``method(*args)`` to a replica now; the returned function waits for it, and retries a replica that
        could not answer on the others for ``retry_window_s`` (a write as an upsert of the same documents)."""
        retry_args = (args[0], args[1], True) if method == "write" else args
        try:
            first = getattr(self.handle, method).remote(*args)
        except self._retryable:
            first = None
        return lambda: self._wait(method, first, retry_args)

    def _wait(self, method: str, response, retry_args: tuple):
        deadline = time.monotonic() + self.retry_window_s
        pause = 0.1
        while True:
            try:
                if response is None:
                    response = getattr(self.handle, method).remote(*retry_args)
                return response.result(timeout_s=CALL_TIMEOUT_S)
            except self._retryable as exc:
                self.retries += 1
                if time.monotonic() + pause > deadline:
                    raise Unavailable(
                        f"shard {self.shard} ({self.where}) has no live replica: none answered within "
                        f"{self.retry_window_s:g} s ({type(exc).__name__})"
                    ) from None
                time.sleep(pause)
                pause = min(pause * 2, 2.0)
                response = None
            except Exception as exc:
                cause = getattr(exc, "cause", None)
                if isinstance(cause, MrlError):  # the request was wrong, on every replica alike
                    raise cause from None
                raise

    def _call(self, method: str, *args):
        return self.start(method, *args)()

    def search(self, unit_queries, k, shortlist, ann_search, funnel, filter, adaptive) -> ShardAnswer:
        return self._call("search", unit_queries, k, shortlist, ann_search, funnel, filter, adaptive)

    def exact(self, unit_queries, k, filter) -> ShardAnswer:
        return self._call("exact", unit_queries, k, filter)

    def describe(self) -> dict:
        return self._call("describe")

    def get(self, ids):
        return self._call("get", ids)

    def ids_matching(self, filter):
        return self._call("ids_matching", filter)

    def write(self, documents, vectors, replace) -> int:
        return self._call("write", documents, vectors, replace)

    def delete(self, ids) -> int:
        return self._call("delete", ids)

    def key_vectors(self, rows):
        return self._call("key_vectors", rows)

    def sample_vectors(self, n, seed):
        return self._call("sample_vectors", n, seed)

    def stats(self) -> dict:
        return {**self._call("stats"), "router_retries": self.retries}


def app_name(layout: ShardLayout, shard: int) -> str:
    """The Ray Serve application of one shard of one build (a redeploy of the same build updates it in place)."""
    return f"mrl-{layout.build_id[:12]}-shard-{shard}"


def deploy(
    folder: str | Path,
    replicas: int = 1,
    address: str = "auto",
    cpus_per_replica: float = 0.5,
    io: str = "auto",
    retry_window_s: float = RETRY_WINDOW_S,
    model=None,
) -> ShardedIndex:
    """Serve a sharded index folder on the Ray cluster at ``address``: ``replicas`` replicas of each shard, and a
    router in this process over them (returned). The folder must be reachable at the same path from the nodes.

    A missing shard folder, or one from another build, is refused before anything is deployed, naming the shard.
    """
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise MrlError(f"`replicas` must be a whole number of at least 1, got {replicas!r}")
    if not 0 < cpus_per_replica <= 64:
        raise MrlError(f"`cpus_per_replica` must be in (0, 64], got {cpus_per_replica}")
    if retry_window_s < 0:
        raise MrlError(f"`retry_window_s` must not be negative, got {retry_window_s}")
    root = Path(folder).resolve()
    layout = ShardLayout.read(root)
    layout.check(root)
    connect(address)
    from ray import serve

    serve.start(proxy_location="Disabled")
    clients = []
    for shard in range(layout.shards):
        deployment = serve.deployment(ShardReplica, name=f"shard-{shard}").options(
            num_replicas=replicas,
            ray_actor_options={"num_cpus": cpus_per_replica},
            health_check_period_s=2,
            health_check_timeout_s=10,
        )
        target = layout.shard_folder(root, shard)
        handle = serve.run(
            deployment.bind(str(target), shard, str(root), io), name=app_name(layout, shard), route_prefix=None
        )
        clients.append(RayShard(shard, handle, str(target), retry_window_s))
    return ShardedIndex(str(root), layout, clients, model)


def undeploy(index: ShardedIndex) -> None:
    """Remove the index's shard deployments from Ray Serve (the cluster keeps running)."""
    from ray import serve

    for shard in range(index.layout.shards):
        serve.delete(app_name(index.layout, shard))
    index.close()
