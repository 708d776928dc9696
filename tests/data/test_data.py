"""Data loading: every format, configurable columns, and errors that name file, line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import with_empty_documents

from mrl.data import load_beir, load_pairs, load_sts, load_triplets
from mrl.errors import DataError

ROWS = [
    {"q": "A man plays guitar.", "pos": "Someone makes music.", "neg": "The man is asleep."},
    {"q": "Two dogs run.", "pos": "Animals are moving.", "neg": "The dogs sit still."},
]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_triplets_from_every_format_with_custom_columns(tmp_path):
    jsonl = write_jsonl(tmp_path / "t.jsonl", ROWS)
    csv_path = tmp_path / "t.csv"
    csv_path.write_text(
        'q,pos,neg\n"A man plays guitar.",Someone makes music.,The man is asleep.\n'
        "Two dogs run.,Animals are moving.,The dogs sit still.\n"
    )
    tsv = tmp_path / "t.tsv"
    tsv.write_text("q\tpos\tneg\n" + "".join(f"{r['q']}\t{r['pos']}\t{r['neg']}\n" for r in ROWS))
    parquet = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), parquet)
    for path in (jsonl, csv_path, tsv, parquet):
        triplets = load_triplets(path, anchor="q", positive="pos", negative="neg")
        assert [t.anchor for t in triplets] == ["A man plays guitar.", "Two dogs run."], path
        assert triplets[1].negative == "The dogs sit still."


def test_real_nli_triplets_load_completely(data_dir):
    triplets = load_triplets(data_dir / "nli-triplets" / "snli_dev.triplets.jsonl")
    assert len(triplets) == 3253  # the README's count: nothing dropped


def test_pairs(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"premise": "a b", "hypothesis": "c d"}])
    pairs = load_pairs(path, anchor="premise", positive="hypothesis")
    assert pairs[0].anchor == "a b" and pairs[0].positive == "c d"


@pytest.mark.parametrize(
    ("content", "line", "needle"),
    [
        ('{"anchor": "a", "positive": "b", "negative": "c"}\n{"anchor": "a", "positive": "b"}\n', 2, "negative"),
        (
            '{"anchor": "a", "positive": "b", "negative": "c"}\n{"anchor": "", "positive": "b", "negative": "c"}\n',
            2,
            "anchor",
        ),
        ('{"anchor": "a", "positive": "b", "negative": "c"}\n{"anchor": "a", "positive": \n', 2, "bad JSON"),
        ('{"anchor": "a", "positive": "same", "negative": "same"}\n', 1, "same text"),
        ('{"anchor": 3, "positive": "b", "negative": "c"}\n', 1, "expected text"),
    ],
)
def test_bad_triplet_rows_name_file_line_and_field(tmp_path, content, line, needle):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(DataError) as info:
        load_triplets(path)
    assert info.value.line == line
    assert str(path) in str(info.value)
    assert needle in str(info.value)


def test_wrong_encoding_is_reported_with_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"anchor": "a", "positive": "b", "negative": "c"}\n{"anchor": "caf\xe9", "positive": "b"}\n')
    with pytest.raises(DataError, match="UTF-8") as info:
        load_triplets(path)
    assert info.value.line == 2


def test_csv_with_missing_column_names_it(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("anchor,positive\nx,y\n")
    with pytest.raises(DataError, match="missing column") as info:
        load_triplets(path)
    assert info.value.field == "negative" and info.value.line == 2


def test_unknown_suffix(tmp_path):
    path = tmp_path / "t.xml"
    path.write_text("<x/>")
    with pytest.raises(DataError, match="unknown file type"):
        load_triplets(path)


def test_real_scifact_split_counts(data_dir):
    test = load_beir(data_dir / "scifact", "test")
    assert test.counts == {"documents": 5183, "queries": 300, "queries_not_in_split": 809, "judgements": 339}
    train = load_beir(data_dir / "scifact", "train")
    assert train.counts["queries"] == 809 and train.counts["judgements"] == 919
    some_id = next(iter(test.corpus))
    assert test.corpus[some_id].strip()  # title + text


def test_beir_unknown_split_lists_available(scifact_small):
    with pytest.raises(DataError, match=r"unknown split 'dev' \(available: test\)"):
        load_beir(scifact_small, "dev")


def _beir(tmp_path: Path, corpus: list, queries: list, qrels: str) -> Path:
    (tmp_path / "qrels").mkdir()
    write_jsonl(tmp_path / "corpus.jsonl", corpus)
    write_jsonl(tmp_path / "queries.jsonl", queries)
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    return tmp_path


def test_beir_duplicate_doc_id(tmp_path):
    folder = _beir(
        tmp_path,
        [{"_id": "d1", "title": "", "text": "x"}, {"_id": "d1", "title": "", "text": "y"}],
        [{"_id": "q1", "text": "q"}],
        "q1\td1\t1\n",
    )
    with pytest.raises(DataError, match="duplicate id 'd1'") as info:
        load_beir(folder)
    assert info.value.line == 2 and info.value.field == "_id"


def test_beir_unknown_qrels_doc(tmp_path):
    folder = _beir(tmp_path, [{"_id": "d1", "title": "", "text": "x"}], [{"_id": "q1", "text": "q"}], "q1\td9\t1\n")
    with pytest.raises(DataError, match=r"document id 'd9' is not in corpus\.jsonl"):
        load_beir(folder)


def test_beir_empty_corpus(tmp_path):
    folder = _beir(tmp_path, [], [{"_id": "q1", "text": "q"}], "q1\td1\t1\n")
    with pytest.raises(DataError, match="corpus is empty"):
        load_beir(folder)


def test_beir_bad_score(tmp_path):
    folder = _beir(tmp_path, [{"_id": "d1", "title": "", "text": "x"}], [{"_id": "q1", "text": "q"}], "q1\td1\thigh\n")
    with pytest.raises(DataError, match="not an integer") as info:
        load_beir(folder)
    assert info.value.line == 2 and info.value.field == "score"


def test_sts_real_file(data_dir):
    sts = load_sts(data_dir / "stsbenchmark" / "sts-test.csv")
    assert len(sts.scores) == 1379  # quotes inside sentences must not merge rows
    assert all(0 <= s <= 5 for s in sts.scores)


def test_sts_bad_score(tmp_path):
    path = tmp_path / "sts.csv"
    path.write_text("g\tf\t2012\t1\t7.5\ta\tb\n")
    with pytest.raises(DataError, match="outside") as info:
        load_sts(path)
    assert info.value.field == "score" and info.value.line == 1


def test_empty_documents_stop_the_load_unless_skipped(data_dir, tmp_path):
    from mrl.data import load_documents

    folder = with_empty_documents(data_dir, tmp_path / "sf")
    with pytest.raises(DataError, match="field 'text': is empty \\(`skip_empty` leaves such documents out"):
        load_beir(folder, "test")
    data = load_beir(folder, "test", skip_empty=True)
    rows = (folder / "corpus.jsonl").read_text().splitlines()
    assert len(data.skipped) == 2 and len(data.corpus) == len(rows) - 2
    assert all(json.loads(rows[s.line - 1])["_id"] == s.id for s in data.skipped)  # the lines are right
    judged = data.judgements_on_skipped
    assert len(judged) == 1 and judged[0]["corpus-id"] in {s.id for s in data.skipped}
    # the judgement stays: the document counts as not found
    assert judged[0]["corpus-id"] in data.qrels[judged[0]["query-id"]]
    assert data.counts["skipped_documents"] == 2 and data.counts["judgements_on_skipped"] == 1
    with pytest.raises(DataError, match="is empty"):
        load_documents(folder / "corpus.jsonl")
    docs = load_documents(folder / "corpus.jsonl", skip_empty=True)
    assert len(docs) == len(rows) - 2 and [s.id for s in docs.skipped] == [s.id for s in data.skipped]
