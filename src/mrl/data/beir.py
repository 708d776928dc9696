"""BEIR-format retrieval datasets: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``.

Also reads the same from the Hugging Face hub (``hf:BeIR/scifact``: the corpus and queries from
that dataset, the qrels from ``BeIR/scifact-qrels``) for users with a network.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path

from mrl.data.records import has_no_text, read_delimited, read_jsonl, text_field
from mrl.data.skipped import EMPTY_HINT, SkippedDocument
from mrl.errors import DataError


@dataclass
class BeirDataset:
    """One split of a retrieval dataset. ``qrels[qid][docid] = relevance`` (0 = judged not relevant)."""

    name: str
    split: str
    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    counts: dict[str, int] = field(default_factory=dict)
    skipped: list[SkippedDocument] = field(default_factory=list)  # documents without text (skip_empty)
    # judgements naming a skipped document: kept in qrels (they count as not found), listed here
    judgements_on_skipped: list[dict] = field(default_factory=list)

    def corpus_fingerprint(self) -> str:
        """A hash of the ids and texts, used to key the embedding cache."""
        return texts_fingerprint(self.corpus)


def split_queries(data: BeirDataset, held_out: int, distractors: int, seed: int) -> tuple[BeirDataset, BeirDataset]:
    """Split a dataset's queries in two: ``held_out`` queries become a dev set, the rest stay for training.

    The dev corpus is the dev queries' judged documents plus ``distractors`` random others, so that a
    dev evaluation each epoch costs seconds rather than a full-corpus encoding. Training keeps the full corpus.
    """
    rng = random.Random(seed)
    qids = sorted(data.qrels)
    rng.shuffle(qids)
    dev_ids, train_ids = qids[:held_out], qids[held_out:]
    dev = subset(data, dev_ids, distractors, rng, name=f"{data.name}-dev", split="dev")
    train = BeirDataset(
        data.name,
        data.split,
        data.corpus,
        {q: data.queries[q] for q in train_ids},
        {q: data.qrels[q] for q in train_ids},
    )
    return train, dev


def subset(
    data: BeirDataset,
    query_ids: list[str],
    distractors: int,
    rng: random.Random,
    name: str | None = None,
    split: str | None = None,
) -> BeirDataset:
    """The given queries with their judged documents plus ``distractors`` random other documents."""
    qrels = {q: data.qrels[q] for q in query_ids}
    needed = sorted({d for docs in qrels.values() for d in docs if d in data.corpus})  # skipped ones are not
    others = sorted(set(data.corpus) - set(needed))
    rng.shuffle(others)
    corpus = {d: data.corpus[d] for d in needed + others[:distractors]}
    counts = {"documents": len(corpus), "queries": len(qrels), "judgements": sum(len(d) for d in qrels.values())}
    return BeirDataset(
        name or data.name, split or data.split, corpus, {q: data.queries[q] for q in query_ids}, qrels, counts
    )


def positive_pairs(data: BeirDataset) -> list:
    """(query, judged-relevant document) training pairs from a split's qrels."""
    from mrl.data.pairs import Pair

    # a judgement on a document left out by skip_empty has no text to train on (load_beir reported it)
    return [
        Pair(data.queries[q], data.corpus[d])
        for q in data.qrels
        for d, rel in data.qrels[q].items()
        if rel > 0 and d in data.corpus
    ]


def texts_fingerprint(texts: dict[str, str]) -> str:
    h = hashlib.sha256()
    for key, text in texts.items():
        h.update(key.encode())
        h.update(b"\0")
        h.update(text.encode())
        h.update(b"\1")
    return h.hexdigest()[:16]


def doc_text(row: dict, path: Path, line: int) -> str:
    """BEIR convention: title and text joined by a space (title may be empty, text may not)."""
    title = row.get("title") or ""
    if not isinstance(title, str):
        raise DataError(f"expected text, got {type(title).__name__}", path, line, "title")
    text = text_field(row, "text", path, line, allow_empty=bool(title.strip()), empty=EMPTY_HINT)
    return f"{title} {text}".strip() if title else text


def load_corpus(
    path: str | Path, skip_empty: bool = False, skipped: list[SkippedDocument] | None = None
) -> dict[str, str]:
    """``{doc_id: "title text"}`` from a BEIR corpus.jsonl; duplicate ids are an error.

    A document with no title and an empty text stops the load, unless ``skip_empty``: then it is left
    out and appended to ``skipped``.
    """
    path = Path(path)
    skipped = skipped if skipped is not None else []

    def text_or_skip(row: dict, p: Path, line: int) -> str | None:
        if skip_empty and has_no_text(row):
            skipped.append(SkippedDocument(str(p), line, _id(row, "_id", p, line)))
            return None
        return doc_text(row, p, line)

    corpus = {k: v for k, v in _load_by_id(path, text_or_skip).items() if v is not None}
    if not corpus:
        raise DataError("corpus is empty" + (" (every document has no text)" if skipped else ""), path)
    return corpus


def load_queries(path: str | Path) -> dict[str, str]:
    return _load_by_id(Path(path), lambda row, p, line: text_field(row, "text", p, line))


def _load_by_id(path: Path, text_of) -> dict[str, str]:
    out: dict[str, str] = {}
    for line, row in read_jsonl(path):
        key = _id(row, "_id", path, line)
        if key in out:
            raise DataError(f"duplicate id '{key}'", path, line, "_id")
        out[key] = text_of(row, path, line)
    return out


def load_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """Read a BEIR qrels TSV (``query-id corpus-id score`` with a header line)."""
    path = Path(path)
    qrels: dict[str, dict[str, int]] = {}
    for line, row in read_delimited(path, delimiter="\t"):
        qid = text_field(row, "query-id", path, line).strip()
        did = text_field(row, "corpus-id", path, line).strip()
        raw = text_field(row, "score", path, line).strip()
        try:
            score = int(raw)
        except ValueError:
            raise DataError(f"score '{raw}' is not an integer", path, line, "score") from None
        if did in qrels.get(qid, {}):
            raise DataError(f"duplicate judgement for query '{qid}', document '{did}'", path, line)
        qrels.setdefault(qid, {})[did] = score
    return qrels


def load_beir(source: str | Path, split: str = "test", skip_empty: bool = False) -> BeirDataset:
    """Load one split of a BEIR folder (or ``hf:<name>``), checking that every qrels id exists.

    Only queries that have judgements in the split are kept, as BEIR does; the number of queries
    in ``queries.jsonl`` but not in the split is reported in ``counts``. With ``skip_empty``,
    documents without text are left out and listed in ``skipped``; judgements that name them stay
    (they count as not found) and are listed in ``judgements_on_skipped``.
    """
    if str(source).startswith("hf:"):
        return _load_beir_hf(str(source)[3:], split)
    folder = Path(source)
    if not folder.is_dir():
        raise DataError("not a folder (expected a BEIR folder with corpus.jsonl, queries.jsonl, qrels/)", folder)
    qrels_dir = folder / "qrels"
    qrels_path = qrels_dir / f"{split}.tsv"
    if not qrels_path.exists():
        known = sorted(p.stem for p in qrels_dir.glob("*.tsv")) if qrels_dir.is_dir() else []
        raise DataError(f"unknown split '{split}' (available: {', '.join(known) or 'none'})", qrels_path)
    skipped: list[SkippedDocument] = []
    corpus = load_corpus(folder / "corpus.jsonl", skip_empty, skipped)
    queries = load_queries(folder / "queries.jsonl")
    qrels = load_qrels(qrels_path)
    return _assemble(folder.name, split, corpus, queries, qrels, qrels_path, skipped)


def _assemble(
    name: str,
    split: str,
    corpus: dict[str, str],
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    qrels_path: str | Path,
    skipped: list[SkippedDocument] | None = None,
) -> BeirDataset:
    skipped_ids = {s.id for s in skipped or []}
    on_skipped = []
    for qid, docs in qrels.items():
        if qid not in queries:
            raise DataError(f"query id '{qid}' is not in queries.jsonl", qrels_path, field="query-id")
        for did, score in docs.items():
            if did in skipped_ids:
                on_skipped.append({"query-id": qid, "corpus-id": did, "score": score})
            elif did not in corpus:
                raise DataError(f"document id '{did}' is not in corpus.jsonl", qrels_path, field="corpus-id")
    if not qrels:
        raise DataError("no judgements in this split", qrels_path)
    split_queries = {qid: queries[qid] for qid in qrels}
    counts = {
        "documents": len(corpus),
        "queries": len(split_queries),
        "queries_not_in_split": len(queries) - len(split_queries),
        "judgements": sum(len(d) for d in qrels.values()),
    }
    if skipped:
        counts |= {"skipped_documents": len(skipped), "judgements_on_skipped": len(on_skipped)}
    return BeirDataset(name, split, corpus, split_queries, qrels, counts, list(skipped or []), on_skipped)


def _id(row: dict, key: str, path: Path, line: int) -> str:
    if key not in row:
        raise DataError("missing column", path, line, key)
    value = row[key]
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise DataError("empty or not a string", path, line, key)
    return value


def _load_beir_hf(name: str, split: str) -> BeirDataset:
    """The hub layout used by BeIR/*: configs 'corpus' and 'queries', qrels in '<name>-qrels'."""
    from datasets import load_dataset

    try:
        corpus_ds = load_dataset(name, "corpus", split="corpus")
        queries_ds = load_dataset(name, "queries", split="queries")
        qrels_ds = load_dataset(f"{name}-qrels", split=split)
    except Exception as exc:  # network, unknown name or split
        raise DataError(f"could not load Hugging Face dataset: {exc}", f"hf:{name}") from None
    corpus: dict[str, str] = {}
    for i, row in enumerate(corpus_ds, start=1):
        doc_id = _id(row, "_id", Path(f"hf:{name}/corpus"), i)
        corpus[doc_id] = doc_text(row, Path(f"hf:{name}/corpus"), i)
    queries = {str(row["_id"]): row["text"] for row in queries_ds}
    qrels: dict[str, dict[str, int]] = {}
    for row in qrels_ds:
        qrels.setdefault(str(row["query-id"]), {})[str(row["corpus-id"])] = int(row["score"])
    return _assemble(name.split("/")[-1], split, corpus, queries, qrels, f"hf:{name}-qrels@{split}")
