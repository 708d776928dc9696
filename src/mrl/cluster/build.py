"""Encoding a corpus and building a sharded index on a Ray cluster.

Ray Data reads the corpus in blocks and encodes them with ``map_batches`` over actors that each hold the model (one
per worker by default; a GPU each with ``gpus``). The driver stages each block's vectors by shard as the block
completes (:mod:`mrl.cluster.staging`), with a progress bar and ETA. Ray retries the work of a worker node that dies;
a block is staged once, whole, so every document lands exactly once. A killed driver resumes with the same command.
When every block is staged, one Ray task per shard builds that shard's embedded index from its staged vectors in the
basis fitted on the whole corpus's sample (the one a single build fits), and ``shards.json`` commits the build.

The index folder must be reachable at the same path from every node that builds a shard (a shared file system; on
one machine, any folder). The result equals a single build of the same corpus: the same ids in the same shards
(:func:`mrl.index.shards.shard_of`), vectors within float rounding of the batches they were encoded in.

Example::

    from mrl.cluster.build import build_on_ray
    from mrl.data import load_documents
    build_on_ray("idx/big", load_documents("big.jsonl"), model="default", shards=4, address="auto")
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mrl.cluster.connect import connect, ray_module
from mrl.cluster.staging import STAGING, Staging, staged_shard_vectors
from mrl.data import Document
from mrl.data.beir import texts_fingerprint
from mrl.errors import MrlError
from mrl.index.build import sample_rows
from mrl.index.engines import DEFAULT_ANN, engine
from mrl.index.generation import BUILD_CHUNK
from mrl.index.interface import AUTO, check_unique
from mrl.index.shards import ShardLayout, assign_shards, mark_shard, prepare_folder, shard_folder_name
from mrl.vectors.rotation import rotation_from_moment

BLOCK_ROWS = 4096


class TextEncoder:
    """The Ray Data actor: loads the model once, then encodes batches of texts (full width, as a single build)."""

    def __init__(self, model: str, batch_size: int, backend: str = "torch"):
        from mrl.model import load_model

        self.model = load_model(model, backend=backend)
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from mrl.encode import encode_texts

        vectors = encode_texts(self.model, [str(t) for t in batch["text"]], self.batch_size, progress=False)
        return {"block": batch["block"], "pos": batch["pos"], "vector": vectors}


def build_shard_task(folder: str, shard: int, shards: int, build_id: str, documents, rotation, settings: dict) -> int:
    """One shard's embedded index from its staged vectors (a Ray task; retried where its node dies).

    Built in a private folder and moved into place only when complete and marked, so a retry never meets a half-made
    shard; returns the shard's document count.
    """
    from mrl.index.embedded import Index

    root = Path(folder)
    vectors = staged_shard_vectors(root, shard)
    if len(vectors) != len(documents):
        raise MrlError(f"shard {shard}: {len(vectors)} staged vectors for {len(documents)} documents")
    scratch = root / STAGING / f"built-{shard_folder_name(shard, shards)}-{uuid.uuid4().hex[:8]}"
    Index.build(scratch, vectors, documents, rotation=rotation, **settings).close()
    mark_shard(scratch, build_id, shard, shards)
    target = root / shard_folder_name(shard, shards)
    if target.exists():
        shutil.rmtree(target)
    os.replace(scratch, target)
    return len(documents)


def _shard_built(folder: Path, shard: int, shards: int, build_id: str) -> bool:
    marker = folder / shard_folder_name(shard, shards) / "shard.json"
    try:
        mark = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return mark == {"build_id": build_id, "shard": shard, "shards": shards}


def build_on_ray(
    folder: str | Path,
    documents: list[Document],
    *,
    model: str,
    shards: int,
    address: str = "auto",
    block_rows: int = BLOCK_ROWS,
    batch_size: int = 64,
    workers: int | None = None,
    gpus: float = 0,
    backend: str = "torch",
    overwrite: bool = False,
    rotate: bool = True,
    prefix_dim: int | str = AUTO,
    ann: str | None = None,
    ann_params: dict | None = None,
    chunk_rows: int = BUILD_CHUNK,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
    **build_options,
) -> ShardLayout:
    """Encode ``documents`` with ``model`` on the Ray cluster at ``address`` and build ``shards`` embedded shards in
    ``folder`` (see the module docstring); returns the layout. ``workers``: encoder actors (default: one per node
    with CPUs); ``gpus``: GPUs per actor; ``build_options`` go to each shard's build (``quant``, ``store``,
    ``keep_dims``, ``target_recall``, ``tune_queries``, ...). Rerunning the same call after a failure resumes it.
    """
    folder = Path(folder)
    if not isinstance(block_rows, int) or block_rows < 1:
        raise MrlError(f"`block_rows` must be a positive whole number, got {block_rows!r}")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise MrlError(f"`workers` must be a positive whole number, got {workers!r}")
    check_unique([d.id for d in documents])
    owners = assign_shards([d.id for d in documents], shards)
    ann = ann or DEFAULT_ANN
    params = {**engine(ann).defaults, **(ann_params or {})}
    plan = {
        "corpus": texts_fingerprint({d.id: d.text for d in documents}),
        "documents": len(documents),
        "model": model,
        "shards": shards,
        "block_rows": block_rows,
    }
    staged = (folder / STAGING / "plan.json").is_file()
    if not staged:  # a staged build of this plan resumes; anything else in the folder needs `overwrite`
        prepare_folder(folder, overwrite)
    elif overwrite:
        try:
            Staging.open(folder, plan, owners)
        except MrlError:  # another build's blocks: overwrite means start afresh
            shutil.rmtree(folder / STAGING)
    connect(address)
    folder.mkdir(parents=True, exist_ok=True)
    staging = Staging.open(folder, plan, owners)
    pending = staging.pending()
    if pending:
        _encode_blocks(staging, documents, pending, model, batch_size, workers, gpus, backend, progress)
    rotation = None
    if rotate:
        rotation = rotation_from_moment(staging.moment(sample_rows(len(documents), ann, params), chunk_rows))
    layout = ShardLayout.new(staging.build_id, owners, shards, model, full_dim=0)  # the width: from shard 0, below
    layout.retire_old(folder)
    settings = {
        "model": model, "prefix_dim": prefix_dim, "ann": ann, "ann_params": ann_params, "overwrite": True,
        "rotate": rotate, "chunk_rows": chunk_rows, **build_options,
    }  # fmt: skip
    ray = ray_module()
    task = ray.remote(build_shard_task).options(num_cpus=1, max_retries=3, retry_exceptions=False)
    todo = [s for s in range(shards) if not _shard_built(folder, s, shards, staging.build_id)]
    root = str(folder.resolve())
    refs = []
    for s in todo:
        mine = [documents[i] for i in np.flatnonzero(owners == s)]
        refs.append(task.remote(root, s, shards, staging.build_id, mine, rotation, settings))
    for done, s in enumerate(todo, 1):
        ray.get(refs[done - 1])
        if report:
            report(f"shard {s} built ({done} of {len(todo)})")
    from mrl.index.embedded import Index

    first = Index.open(layout.shard_folder(folder, 0))
    layout.full_dim = first.full_dim
    first.close()
    layout.write(folder)  # the commit point
    staging.remove()
    return layout


def _encode_blocks(
    staging: Staging,
    documents: list[Document],
    pending: list[int],
    model: str,
    batch_size: int,
    workers: int | None,
    gpus: float,
    backend: str,
    progress: bool,
) -> None:
    """Encode the pending blocks on the cluster and stage each as soon as its last row arrives."""
    import pyarrow as pa
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    ray = ray_module()
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # ours below counts documents across resumes
    context.print_on_execution_start = False
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) >= 1]
    actors = workers or max(1, len(nodes))
    # Ray Data's blocks are smaller than the staging blocks, so that every actor has work even when few staging
    # blocks are left: about four pieces per actor, never below one encoding batch
    rows = sum(len(staging.block_range(b)) for b in pending)
    piece = max(batch_size, min(staging.block_rows, -(-rows // (4 * actors))))
    tables = []
    for block in pending:
        span = staging.block_range(block)
        for start in range(0, len(span), piece):
            part = span[start : start + piece]
            tables.append(
                pa.table({
                    "block": pa.array(np.full(len(part), block, dtype=np.int64)),
                    "pos": pa.array(np.arange(start, start + len(part), dtype=np.int64)),
                    "text": pa.array([documents[i].text for i in part], pa.large_string()),
                })
            )  # fmt: skip
    dataset = ray.data.from_arrow(tables).map_batches(
        TextEncoder,
        fn_constructor_kwargs={"model": model, "batch_size": batch_size, "backend": backend},
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=1,
        num_gpus=gpus or None,
    )
    buffers: dict[int, np.ndarray] = {}
    filled: dict[int, np.ndarray] = {}
    done_rows = staging.documents - sum(len(staging.block_range(b)) for b in pending)
    columns = (TextColumn("encoding on Ray"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True, disable=not progress) as bar:
        task = bar.add_task("encode", total=staging.documents, completed=done_rows)
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            vectors = np.asarray(batch["vector"], dtype=np.float32)
            for block in np.unique(batch["block"]):
                block = int(block)
                mine = batch["block"] == block
                if block not in buffers:
                    buffers[block] = np.empty((len(staging.block_range(block)), vectors.shape[1]), np.float32)
                    filled[block] = np.zeros(len(staging.block_range(block)), dtype=bool)
                pos = batch["pos"][mine]
                fresh = int((~filled[block][pos]).sum())  # a retried task's rows arrive again: counted once
                buffers[block][pos] = vectors[mine]
                filled[block][pos] = True
                bar.advance(task, fresh)
                if filled[block].all():
                    staging.write_block(block, buffers.pop(block))
                    del filled[block]
    if buffers:
        missing = sorted(buffers)
        raise MrlError(f"the Ray encoding ended with blocks {missing[:5]} incomplete; rerun the same command to resume")
