"""Which engine for the first pass? mrl's faiss HNSW-SQ8 against the field's other ANN engines, same prefix.

Every engine shortlists k' rows on the same re-normalized prefix of the vectors as the mrl index stores
them (rotated, mrl.index.rotation, unless --no-rotate); mrl's own exact rerank on the full
vectors (the memory-mapped segment of one mrl index) turns each shortlist into a top 10, so the
engines differ only in the first pass. Same data and queries as index_speed.py. Engines:

- faiss-hnsw-sq8: mrl's default, exactly as ``mrl index build --ann hnsw`` makes and opens it
  (8-bit codes, 2 MiB pages), searched through ``Index.search_keys``;
- faiss-ivf-pq-fastscan: ``--ann ivf --quant pq4``, IVF with 4-bit PQ codes (2 dims a code) scanned with SIMD;
- scann: ScaNN's k-means tree with SOAR spilling, anisotropic 4-bit hashing and int8 reordering;
- usearch-i8: usearch's HNSW on int8 codes (scaled so the largest prefix component maps to 127);
- glass-sq8: pyglass (zilliztech), an HNSW walk that prefetches the next neighbours' codes, over 8-bit codes;
- vsag-sq8, vsag-sq4, vsag-fp16: VSAG's HGraph (Ant Group) over 8-bit, 4-bit or float16 codes;
- svs-fp16: SVS Vamana over float16 codes, as ``--ann vamana --quant fp16`` builds it (needs ``mrl[svs]``);
- faiss-nsg-sq8, faiss-nsg-flat: faiss's NSG graph (built from an NN-Descent k-NN graph) over 8-bit codes or floats;
- zvec-hnsw-int8: zvec's HNSW over int8 codes as ``--ann zvec`` builds and opens it (zvec-hnsw-int8-m32: with
  M 32). The earlier screen of zvec's other options (its mapped layout, a longer prefetch, RaBitQ codes, its Vamana
  graph; ``first_pass-200000-p256-768-zvec-variants.json``) ran on code that this file no longer carries: mrl's
  engine is what is measured here.

ScaNN, usearch, pyglass and pyvsag are benchmark-only dependencies: ``pip install -e '.[bench]'``.
A quick screen at 200k vectors, fewer beams and shortlists:

    python benchmarks/first_pass.py --n 200000 --model models/all-mpnet-base-v2 --bf16 --real-limit 2000 \
        --prefix-dim 256 --engines zvec-hnsw-int8,svs-fp16 --shortlists 50,80 --knobs 50,64,80,96,128,192 \
        --tag 768-screen

    python benchmarks/first_pass.py --n 1000000 --model models/bench/mrl-w --prefix-dim 256 --no-rotate
    python benchmarks/first_pass.py --n 1000000 --model models/bench/mrl-w --prefix-dim 192 --engines glass-sq8 \
        --shortlists 50,80,100

Writes benchmarks/results/first_pass-<n>-p<dim>.json and prints the best single-query QPS of each
engine at recall@10 >= 0.95 and 0.99, with its ratio to faiss-hnsw-sq8 measured in the same run.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import faiss
import numpy as np
from rich.table import Table

from mrl.data import Document
from mrl.eval.tables import console
from mrl.index import Index
from mrl.index.engines import ENGINES as MRL_ENGINES
from mrl.provenance import write_json
from mrl.vectors.prefix import prefix
from mrl.vectors.rotation import rotate_rows

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from harness import K, add_data_args, all_claims, benchmark_vectors, operating_point, time_point  # noqa: E402
from harness import faiss_bytes as index_bytes  # noqa: E402


def point(name: str, setting: dict, truth: np.ndarray, search, queries: np.ndarray) -> dict:
    return {"system": name, **setting, **time_point(search, queries, truth)}


def best_at(points: list[dict], target: float, keep) -> dict | None:
    return operating_point([p for p in points if keep(p["system"])], target)


DEFAULT = "faiss-hnsw-sq8"
PEER = "faiss-hnsw-full (peer)"


def built_by_mrl(ann: str, quant: str, vectors: np.ndarray, params: dict):
    """A first pass of mrl's engine ``ann`` over ``vectors`` (the prefixes), built as ``Index.build`` builds it."""
    chunks = lambda: iter([(0, vectors)])  # noqa: E731
    return MRL_ENGINES[ann].build(quant, vectors.shape[1], len(vectors), params, chunks, chunks, len(vectors))


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class IvfPqFastScan:
    """``--ann ivf --quant pq4``: faiss IVF with 4-bit PQ fast-scan codes, built by mrl's ivf engine; knob = nprobe."""

    name = "faiss-ivf-pq-fastscan"
    grid = tuple((nprobe, kp) for nprobe in (32, 64, 128, 256) for kp in (100, 200))

    def __init__(self, vectors: np.ndarray, tmp: Path):
        self.params = {}
        self.index = built_by_mrl("ivf", "pq4", vectors, self.params).index
        self.bytes = index_bytes(self.index)

    def shortlist(self, q: np.ndarray, knob: int, kp: int) -> np.ndarray:
        return self.index.search(q, kp, params=faiss.SearchParametersIVF(nprobe=knob))[1]


class Scann:
    """ScaNN tree + anisotropic hashing + int8 reordering: knob = leaves searched (of about 2 sqrt(n))."""

    name = "scann"
    grid = tuple((leaves, kp) for leaves in (16, 32, 64, 128) for kp in (100, 200))

    def __init__(self, vectors: np.ndarray, tmp: Path):
        import scann
        from scann.scann_ops.py.scann_builder import ReorderType

        leaves = int(2 * np.sqrt(len(vectors)))
        builder = (
            scann.scann_ops_pybind.builder(vectors, K, "dot_product")
            .tree(leaves, 32, training_sample_size=250_000, spherical=True, quantize_centroids=True, soar_lambda=1.0)
            .score_ah(2, anisotropic_quantization_threshold=0.2)
            .reorder(200, quantize=ReorderType.INT8)
        )
        builder.set_n_training_threads(faiss.omp_get_max_threads())
        self.searcher = builder.build()
        self.searcher.serialize(str(tmp))
        self.bytes = folder_bytes(tmp)
        self.params = {"leaves": leaves, "soar_lambda": 1.0, "dims_per_block": 2, "avq_threshold": 0.2}

    def shortlist(self, q: np.ndarray, knob: int, kp: int) -> np.ndarray:
        # AH scores 4 k' candidates, int8 reordering keeps the best k'
        if len(q) == 1:
            rows = self.searcher.search(q[0], kp, 4 * kp, knob)[0][None, :]
        else:
            rows = self.searcher.search_batched_parallel(q, kp, 4 * kp, knob)[0]
        return rows.astype(np.int64)


class UsearchI8:
    """usearch HNSW over int8 codes, built like mrl's graph (M 16, efConstruction 200): knob = ef."""

    name = "usearch-i8"

    def __init__(self, vectors: np.ndarray, tmp: Path):
        from usearch.index import Index as UIndex
        from usearch.index import MetricKind

        # one global scale keeps inner products proportional (usearch's own i8 cast assumes values near 1)
        self.scale = 127.0 / float(np.quantile(np.abs(vectors[:100_000]), 0.9999))
        self.index = UIndex(ndim=vectors.shape[1], metric=MetricKind.IP, dtype="i8", connectivity=16, expansion_add=200)
        self.index.add(np.arange(len(vectors)), self.codes(vectors), threads=faiss.omp_get_max_threads())
        self.index.save(str(tmp / "usearch.bin"))
        self.bytes = folder_bytes(tmp)
        self.params = {"connectivity": 16, "expansion_add": 200, "scale": self.scale}

    def codes(self, x: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(x * self.scale), -127, 127).astype(np.int8)

    def shortlist(self, q: np.ndarray, knob: int, kp: int) -> np.ndarray:
        self.index.expansion_search = knob
        found = self.index.search(self.codes(q), kp, threads=1 if len(q) == 1 else faiss.omp_get_max_threads())
        if len(q) == 1:  # usearch answers one query with Matches (only the hits found), a batch with BatchMatches
            return np.pad(np.asarray(found.keys, dtype=np.int64), (0, kp - len(found.keys)), constant_values=-1)[None]
        keys = np.asarray(found.keys, dtype=np.int64)
        return np.where(np.arange(keys.shape[1]) < np.asarray(found.counts)[:, None], keys, -1)


class GlassSQ8:
    """pyglass (zilliztech): an HNSW graph walked with software prefetching over 8-bit codes: knob = ef.

    Built like mrl's graph (32 neighbours a node on the base layer, as faiss M=16; construction beam 200).
    """

    name = "glass-sq8"

    def __init__(self, vectors: np.ndarray, tmp: Path):
        import glass

        self.graph = glass.Index("HNSW", "IP", "FP32", R=32, L=200).build(vectors)
        self.graph.save(str(tmp / "glass.graph"))
        self.searcher = glass.Searcher(self.graph, vectors, "IP", "SQ8")
        self.searcher.optimize()  # picks its prefetch depths by timing sample searches
        self.bytes = folder_bytes(tmp) + vectors.size  # the graph file plus one byte a dim of codes
        self.params = {"R": 32, "L": 200, "quant": "SQ8"}

    def shortlist(self, q: np.ndarray, knob: int, kp: int) -> np.ndarray:
        self.searcher.set_ef(knob)  # both searches answer (ids, distances)
        if len(q) == 1:
            return np.asarray(self.searcher.search(q[0], kp)[0], dtype=np.int64)[None]
        return np.asarray(self.searcher.batch_search(q, kp)[0], dtype=np.int64)


class VsagHGraph:
    """VSAG's HGraph (Ant Group, Apache-2.0): a hierarchical graph over quantized codes; knob = ef_search.

    Built like mrl's graph (32 neighbours a node on the bottom layer, construction beam 200). pyvsag answers
    one query a call, so its batch figure is a loop on one core.
    """

    quant = "sq8"

    def __init__(self, vectors: np.ndarray, tmp: Path):
        import pyvsag

        n, dim = vectors.shape
        self.params = {"base_quantization_type": self.quant, "max_degree": 32, "ef_construction": 200}
        config = {"dtype": "float32", "metric_type": "ip", "dim": dim, "index_param": dict(self.params)}
        config["index_param"]["build_thread_count"] = faiss.omp_get_max_threads()
        self.index = pyvsag.Index("hgraph", json.dumps(config))
        self.index.build(vectors=np.ascontiguousarray(vectors), ids=np.arange(n), num_elements=n, dim=dim)
        self.index.save(str(tmp / "vsag.index"))
        self.bytes = folder_bytes(tmp)
        ids = np.asarray(self.index.knn_search(vector=vectors[0], k=1, parameters=self._params(16))[0])
        assert ids[0] == 0, "pyvsag answered (distances, ids), not (ids, distances)"

    @staticmethod
    def _params(ef: int) -> str:
        return json.dumps({"hgraph": {"ef_search": ef}})

    def shortlist(self, q: np.ndarray, knob: int, kp: int) -> np.ndarray:
        params = self._params(knob)
        out = np.full((len(q), kp), -1, dtype=np.int64)
        for i, row in enumerate(q):
            ids = np.asarray(self.index.knn_search(vector=np.ascontiguousarray(row), k=kp, parameters=params)[0])
            out[i, : len(ids)] = ids
        return out


class VsagSQ8(VsagHGraph):
    name = "vsag-sq8"


class VsagSQ4(VsagHGraph):
    name = "vsag-sq4"
    quant = "sq4_uniform"


class VsagFP16(VsagHGraph):
    name = "vsag-fp16"
    quant = "fp16"


class SvsFP16:
    """SVS Vamana over float16 codes (the open float path of ``--ann vamana --quant fp16``); knob = the window."""

    name = "svs-fp16"

    def __init__(self, vectors: np.ndarray, tmp: Path):
        self.params = {}
        built_by_mrl("vamana", "fp16", vectors, self.params).save(tmp / "svs")
        self.ann = MRL_ENGINES["vamana"].load(tmp / "svs", "fp16")
        self.bytes = folder_bytes(tmp)

    def shortlist(self, q: np.ndarray, knob: int, kp: int) -> np.ndarray:
        return self.ann.search(q, kp, beam=knob)


class FaissNSG:
    """faiss NSG (Fu et al., VLDB 2019: a pruned single-layer graph like Vamana) over 8-bit codes; knob = search_L.

    The graph is built from an NN-Descent k-NN graph (faiss's build_type 1), R = 32 neighbours a node.
    """

    name = "faiss-nsg-sq8"
    codes = "SQ8"

    def __init__(self, vectors: np.ndarray, tmp: Path):
        dim = vectors.shape[1]
        self.params = {"R": 32, "codes": self.codes, "GK": 64}
        if self.codes == "Flat":
            self.index = faiss.IndexNSGFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        else:
            self.index = faiss.IndexNSGSQ(dim, faiss.ScalarQuantizer.QT_8bit, 32, faiss.METRIC_INNER_PRODUCT)
            self.index.train(vectors)
        self.index.build_type = 1
        self.index.GK = 64
        self.index.add(np.ascontiguousarray(vectors))
        self.bytes = index_bytes(self.index)

    def shortlist(self, q: np.ndarray, knob: int, kp: int) -> np.ndarray:
        self.index.nsg.search_L = knob  # faiss has no per-call NSG parameters
        return self.index.search(np.ascontiguousarray(q), kp)[1]


class FaissNSGFlat(FaissNSG):
    name = "faiss-nsg-flat"
    codes = "Flat"


class ZvecHnswInt8:
    """zvec's HNSW over int8 codes, built and opened by mrl's own zvec engine (``--ann zvec``); knob = ef."""

    name = "zvec-hnsw-int8"
    m = 16

    def __init__(self, vectors: np.ndarray, tmp: Path):
        self.params = {"M": self.m, "efConstruction": 200}
        built_by_mrl("zvec", "sq8", vectors, self.params).save(tmp / "z")
        self.ann = MRL_ENGINES["zvec"].load(tmp / "z", "sq8")  # the read-only low-latency path mrl searches
        self.bytes = folder_bytes(tmp)

    def shortlist(self, q: np.ndarray, knob: int, kp: int) -> np.ndarray:
        return self.ann.search(q, kp, beam=knob)


class ZvecHnswInt8M32(ZvecHnswInt8):
    name = "zvec-hnsw-int8-m32"
    m = 32


ENGINES = {
    e.name: e
    for e in (IvfPqFastScan, Scann, UsearchI8, GlassSQ8, VsagSQ8, VsagSQ4, VsagFP16, SvsFP16, FaissNSG, FaissNSGFlat,
              ZvecHnswInt8, ZvecHnswInt8M32)
}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(ap, 1_000_000)
    ap.add_argument("--prefix-dim", type=int, default=256)
    ap.add_argument("--engines", default=",".join(ENGINES), help=f"besides {DEFAULT}: any of {', '.join(ENGINES)}")
    ap.add_argument("--no-rotate", action="store_true", help="the raw prefix (Index.build(rotate=False))")
    ap.add_argument(
        "--with-peer",
        action="store_true",
        help="also faiss HNSW on the full vectors (M 32, efConstruction 200), the peer of index_speed.py, in this run",
    )
    ap.add_argument("--tag", default="", help="suffix of the result file")
    ap.add_argument(
        "--shortlists",
        default="100,150,200",
        help="k' values of the graph engines (faiss, usearch, glass); a rotated prefix needs shorter ones",
    )
    ap.add_argument("--knobs", default="64,96,128,160,192,256,384", help="search beams of the graph engines")
    args = ap.parse_args()
    shortlists = [int(x) for x in args.shortlists.split(",")]
    knobs = [int(x) for x in args.knobs.split(",")]
    graph_grid = tuple((ef, kp) for ef in knobs for kp in shortlists if kp <= ef)

    _, base, queries, info = benchmark_vectors(args)
    queries = all_claims(queries, 1000)
    p = args.prefix_dim
    flat = faiss.IndexFlatIP(base.shape[1])
    flat.add(base)
    truth = flat.search(queries, K)[1]
    del flat
    result = {"n": args.n, "dim": base.shape[1], "prefix_dim": p, "k": K, "data": info, "points": [], "systems": {}}
    result["rotated"] = not args.no_rotate
    c = console()
    if args.with_peer:
        peer = faiss.IndexHNSWFlat(base.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        peer.hnsw.efConstruction = 200
        t0 = time.perf_counter()
        peer.add(base)
        result["systems"][PEER] = {
            "ram_bytes": index_bytes(peer),
            "build_s": time.perf_counter() - t0,
        }
        for ef in knobs:
            params = faiss.SearchParametersHNSW(efSearch=ef)
            search = lambda q, p=params: peer.search(q, K, params=p)[1]  # noqa: E731
            result["points"].append(point(PEER, {"knob": ef, "shortlist": K}, truth, search, queries))
            c.print(result["points"][-1])
        del peer
        gc.collect()

    work = Path(tempfile.mkdtemp(prefix="mrl-first-pass-"))
    t0 = time.perf_counter()
    docs = [Document(str(i), "") for i in range(args.n)]
    index = Index.build(
        work / "mrl",
        base,
        docs,
        prefix_dim=p,
        ann="hnsw",
        ann_params={"M": 16, "efConstruction": 200},
        rotate=not args.no_rotate,
    )
    unit_prefix = np.ascontiguousarray(prefix(rotate_rows(base, index.gen.rotation), p))  # what mrl's first pass holds
    st = index.stats()
    result["systems"][DEFAULT] = {"ram_bytes": st["ram_bytes"], "build_s": time.perf_counter() - t0, **st["ann_params"]}
    for ef, kp in graph_grid:
        search = lambda q, ef=ef, kp=kp: index.search_keys(q, K, shortlist=kp, ann_search=ef)[0]  # noqa: E731
        result["points"].append(point(DEFAULT, {"knob": ef, "shortlist": kp}, truth, search, queries))
        c.print(result["points"][-1])
    del base
    gc.collect()

    for name in [e for e in args.engines.split(",") if e]:
        tmp = work / name
        tmp.mkdir()
        t0 = time.perf_counter()
        engine = ENGINES[name](unit_prefix, tmp)
        result["systems"][name] = {"ram_bytes": engine.bytes, "build_s": time.perf_counter() - t0, **engine.params}
        c.print(f"{name} built in {result['systems'][name]['build_s']:.0f} s")
        for knob, kp in getattr(engine, "grid", graph_grid):  # partitioned engines carry their own knob grid

            def search(q, knob=knob, kp=kp, engine=engine):
                q = rotate_rows(q, index.gen.rotation)  # as Index.search_keys does first
                cand = engine.shortlist(prefix(q, p), knob, kp)
                # the rerank of Index.search_keys, on this engine's shortlist
                return Index._rerank(index.gen, q, cand, K, [])[0]

            result["points"].append(point(name, {"knob": knob, "shortlist": kp}, truth, search, queries))
            c.print(result["points"][-1])
        del engine
        gc.collect()
        shutil.rmtree(tmp, ignore_errors=True)
    index.close()
    shutil.rmtree(work, ignore_errors=True)

    result["summary"] = summarize(result)
    out = ROOT / "benchmarks" / "results" / f"first_pass-{args.n}-p{p}{'-' + args.tag if args.tag else ''}.json"
    write_json(result, out)
    print_summary(result)


def summarize(result: dict) -> dict:
    """Per recall target and engine: its fastest point and its single-query QPS over faiss-hnsw-sq8's."""
    out = {}
    for target in (0.95, 0.99):
        ref = best_at(result["points"], target, DEFAULT.__eq__)
        peer = best_at(result["points"], target, PEER.__eq__)
        entry = {}
        for name in result["systems"]:
            best = best_at(result["points"], target, name.__eq__)
            entry[name] = best and {
                **best,
                "qps_single_ratio_vs_default": ref and best["qps_single"] / ref["qps_single"],
                **({"qps_single_ratio_vs_peer": best["qps_single"] / peer["qps_single"]} if peer else {}),
                **({"qps_batch_ratio_vs_peer": best["qps_batch"] / peer["qps_batch"]} if peer else {}),
            }
        out[str(target)] = entry
    return out


def print_summary(result: dict) -> None:
    table = Table(title=f"first pass on the {result['prefix_dim']}-dim prefix of {result['n']:,} x {result['dim']}")
    for col in (
        "target",
        "engine",
        "knob",
        "k'",
        "recall@10",
        "QPS single",
        "QPS batch",
        f"x {DEFAULT}",
        "x peer",
        "MiB",
    ):
        table.add_column(col, justify="right")
    for target, entry in result["summary"].items():
        for name, best in entry.items():
            mib = f"{result['systems'][name]['ram_bytes'] / 2**20:.0f}"
            if not best:
                table.add_row(target, name, "not reached", *["-"] * 6, mib)
                continue
            ratio = best.get("qps_single_ratio_vs_default")
            table.add_row(
                target,
                name,
                str(best["knob"]),
                str(best["shortlist"]),
                f"{best['recall@10']:.4f}",
                f"{best['qps_single']:.0f}",
                f"{best['qps_batch']:.0f}",
                f"{ratio:.2f}" if ratio else "-",
                f"{best['qps_single_ratio_vs_peer']:.2f}" if "qps_single_ratio_vs_peer" in best else "-",
                mib,
            )
    console().print(table)


if __name__ == "__main__":
    main()
