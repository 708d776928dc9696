"""Every figure the README and the docs quote from a result file equals the value it names, at the precision shown.

A figure carries a marker right after it that names its file and the JSON path of its value:
``2.72x<!-- figure: benchmarks/results/x.json#summary.0.99.mrl.qps_single_ratio_vs_best_peer -->``. Path segments
are dict keys or list indices, split on dots; a key that holds a dot itself (``0.99``) is matched whole. A figure
with a ``%`` compares with 100 x the value, one in ``MiB`` with the value over 2^20; plain ratios (``x``), QPS and
scores compare as they are. In the README every figure (a number with a decimal point, a thousands separator, ``x``
or ``%``) must carry a marker, so a number can only get there from a file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MARKER = re.compile(r"<!-- figure: (?P<file>[^#\s]+)#(?P<path>\S+) -->")
# the figure a marker checks: the number just before it, with its unit
FIGURE = re.compile(r"(?P<number>[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)(?P<unit>x|%| MiB| GiB| ms| s)?\**\s*$")
# any figure in running text: a decimal point, thousands separators, or x / %
ANY_FIGURE = re.compile(r"(?<![\w.#/-])[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:x|%)?(?![\w.])")
UNITS = {"%": 100.0, " MiB": 2.0**-20, " GiB": 2.0**-30}


def resolve(data, path: str):
    """The value at a dotted ``path``; a dict key may itself hold dots (``summary.0.99.mrl``)."""
    parts = path.split(".")
    node, i = data, 0
    while i < len(parts):
        if isinstance(node, list):
            node, i = node[int(parts[i])], i + 1
            continue
        for j in range(len(parts), i, -1):  # the longest run of segments that is a key
            key = ".".join(parts[i:j])
            if isinstance(node, dict) and key in node:
                node, i = node[key], j
                break
        else:
            raise KeyError(f"no key at '{'.'.join(parts[i:])}'")
    return node


def check(text_before: str, file: str, path: str, root: Path = REPO) -> str | None:
    """None if the figure right before a marker equals the value it names at the printed precision, else why not."""
    found = FIGURE.search(text_before)
    if not found:
        return f"no figure right before the marker for {file}#{path}"
    raw, unit = found["number"], found["unit"] or ""
    try:
        value = resolve(json.loads((root / file).read_text()), path)
    except (OSError, KeyError, IndexError, ValueError) as exc:
        return f"{file}#{path}: {exc}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{file}#{path} is {value!r}, not a number"
    decimals = len(raw.split(".")[1]) if "." in raw else 0
    shown = float(raw.replace(",", ""))
    expected = value * UNITS.get(unit, 1.0)
    if abs(shown - expected) > 0.5 * 10**-decimals + 1e-9:
        return f"{raw}{unit} is not {file}#{path} = {expected:.{decimals + 2}f}"
    return None


def markers(page: Path) -> list[tuple[int, str, str, str]]:
    """(line number, text before the marker on its line, file, path) for each marker of a page."""
    out = []
    for n, line in enumerate(page.read_text().splitlines(), 1):
        start = 0
        for m in MARKER.finditer(line):
            out.append((n, re.sub(r"<!--.*?-->", "", line[start : m.start()]), m["file"], m["path"]))
            start = m.end()
    return out


def unmarked_figures(text: str) -> list[str]:
    """Figures of ``text`` that no marker follows (code, links and file names are not figures)."""
    out = []
    for line in text.splitlines():
        if line.startswith("```") or line.lstrip().startswith(("make ", "mrl ", "python ", "pip ", "#")):
            continue
        plain = MARKER.sub("\0", line)
        plain = re.sub(r"`[^`]*`|\[[^\]]*\]\([^)]*\)|\([^)]*\.(?:json|png|md)[^)]*\)|\S+\.(?:json|png)", " ", plain)
        for m in ANY_FIGURE.finditer(plain):
            raw = m.group(0)
            if "." not in raw and "," not in raw and not raw.endswith(("x", "%")):
                continue  # a setting (dims, k'), not a measurement
            rest = re.sub(r"^(?: MiB| GiB| ms| s)", "", plain[m.end() :].lstrip("*"))
            if not rest.startswith("\0"):
                out.append(raw)
    return out


MARKED = [(page, *m) for page in PAGES for m in markers(page)]


def test_pages_mark_their_figures():
    assert MARKED, "no <!-- figure: ... --> markers in the README or the docs"


@pytest.mark.parametrize(
    ("page", "line", "before", "file", "path"), MARKED, ids=[f"{m[0].name}:{m[1]}" for m in MARKED]
)
def test_each_marked_figure_equals_its_value(page, line, before, file, path):
    problem = check(before, file, path)
    assert problem is None, f"{page.name}:{line}: {problem}"


def test_every_figure_of_the_readme_names_its_file():
    text = (REPO / "README.md").read_text()
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    assert unmarked_figures(text) == []


def test_no_page_keeps_an_unchecked_block_marker():
    """The old ``<!-- figures: file -->`` blocks accepted a figure found anywhere in the file; none may remain."""
    assert [p.name for p in PAGES if "<!-- figures:" in p.read_text()] == []


def test_a_wrong_figure_fails(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps({"summary": {"0.99": {"ratio": 2.7183, "hot": 3 * 2**20}}, "l": [0.5]}))
    ok = lambda before, path: check(before, "r.json", path, tmp_path)  # noqa: E731
    assert ok("| 2.72x", "summary.0.99.ratio") is None
    assert ok("**2.7x**", "summary.0.99.ratio") is None
    assert "is not" in ok("| 2.73x", "summary.0.99.ratio")  # a wrong figure fails at the printed precision
    assert "is not" in ok("2.7184", "summary.0.99.ratio")
    assert ok("3 MiB", "summary.0.99.hot") is None and "is not" in ok("3 GiB", "summary.0.99.hot")
    assert ok("50%", "l.0") is None and "is not" in ok("0.6", "l.0")
    assert "no key" in ok("2.72x", "summary.0.95.ratio")
    assert "no figure" in ok("see the file", "summary.0.99.ratio")
    assert unmarked_figures("It is 2.72x<!-- figure: r.json#a --> faster, and 1.5x in batches") == ["1.5x"]
