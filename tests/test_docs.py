"""Every figure the README and the docs cite from a result file is in that file.

A block of Markdown (a table or a paragraph) that quotes measurements starts with a marker naming its
source, ``<!-- figures: benchmarks/results/<file>.json -->``. Every number in the block written with
a decimal point, a thousands separator or a unit (0.6516, 2.06x, 1,270, 88%) must equal, at the precision
shown, some number in that file (a percentage also as a fraction). Plain integers are settings (dims, k',
efSearch) and are not checked.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MARKER = re.compile(r"<!-- figures: (.+?) -->")
# a number with a decimal point or thousands separators, optionally signed, then x or % or nothing
NUMBER = re.compile(r"(?<![\w.])([+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)(x|%)?(?![\w])")


def cited_blocks(page: Path) -> list[tuple[int, list[Path], str]]:
    """(line, result files, text) for each marked block: the lines after a marker up to a blank line.

    A marker may name several files (a table with one row per run); a figure must then be in one of them.
    """
    lines = page.read_text().splitlines()
    out = []
    for i, line in enumerate(lines):
        found = MARKER.search(line)
        if not found:
            continue
        block = []
        for following in lines[i + 1 :]:
            if not following.strip() and block:
                break
            if following.strip():
                block.append(following)
        out.append((i + 1, [REPO / name for name in found.group(1).split()], "\n".join(block)))
    return out


def numbers_in(value) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        return [x for v in value.values() for x in numbers_in(v)]
    if isinstance(value, list):
        return [x for v in value for x in numbers_in(v)]
    return []


def figures(text: str) -> list[tuple[str, float, int, str]]:
    """(as written, value, decimals, suffix) of each checked number; links, code and file names are skipped."""
    text = re.sub(r"`[^`]*`|\([^)]*\.(?:json|png|md)\)|\S+\.(?:json|png)", " ", text)
    out = []
    for m in NUMBER.finditer(text):
        raw, suffix = m.group(1), m.group(2) or ""
        if "." not in raw and "," not in raw and not suffix:
            continue
        decimals = len(raw.split(".")[1]) if "." in raw else 0
        out.append((m.group(0), float(raw.replace(",", "").lstrip("+")), decimals, suffix))
    return out


def matches(value: float, decimals: int, suffix: str, pool: list[float]) -> bool:
    candidates = pool + ([100 * v for v in pool] if suffix == "%" else [])
    tolerance = 0.5 * 10**-decimals + 1e-9
    return any(abs(abs(c) - abs(value)) <= tolerance for c in candidates)  # a gap may be quoted with either sign


BLOCKS = [(page, line, file, text) for page in PAGES for line, file, text in cited_blocks(page)]


def test_pages_cite_their_figures():
    assert BLOCKS, "no <!-- figures: ... --> markers found in the README or the docs"


@pytest.mark.parametrize(("page", "line", "files", "text"), BLOCKS, ids=[f"{b[0].name}:{b[1]}" for b in BLOCKS])
def test_cited_figures_match_their_result_file(page, line, files, text):
    missing = [f.name for f in files if not f.is_file()]
    assert not missing, f"{page.name}:{line} cites {missing}, which do not exist"
    pool = [x for f in files for x in numbers_in(json.loads(f.read_text()))]
    wrong = [raw for raw, value, decimals, suffix in figures(text) if not matches(value, decimals, suffix, pool)]
    assert not wrong, f"{page.name}:{line}: not in {[f.name for f in files]}: {wrong}"


def test_figure_extraction_on_a_known_block():
    found = figures("| mrl | 0.6516 | 2.06x | 1,270 QPS | 88% | 64 dims | `index_speed-1000000.json` |")
    assert [f[0] for f in found] == ["0.6516", "2.06x", "1,270", "88%"]
    assert matches(0.6516, 4, "", [0.65164]) and not matches(0.6516, 4, "", [0.6519])
    assert matches(1270, 0, "", [1270.4]) and matches(88.0, 0, "%", [0.8812])
