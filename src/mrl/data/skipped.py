"""Documents left out of a load because they have no text (``--skip-empty``), and what pointed at them.

Why a record and not a quiet filter: real collections come with a few empty documents (a title-less,
abstract-less entry), and refusing the whole set over them helps nobody. But a document that is skipped
cannot be retrieved, so every judgement that names it is reported: such judgements stay in the qrels and
count as not found, rather than vanishing from the evaluation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# the message for a document without text, where the loader could skip it instead
EMPTY_HINT = "is empty (`skip_empty` leaves such documents out, and reports them)"


@dataclass(frozen=True)
class SkippedDocument:
    """One document without text: where it was and its id."""

    path: str
    line: int
    id: str

    def to_json(self) -> dict:
        return asdict(self)


class DocumentList(list):
    """A list of loaded documents that also carries the ones ``skip_empty`` left out (``.skipped``)."""

    def __init__(self, items=(), skipped: list[SkippedDocument] | None = None):
        super().__init__(items)
        self.skipped: list[SkippedDocument] = list(skipped or [])


def describe(skipped: list[SkippedDocument], most: int = 10) -> str:
    """One line for the terminal: how many were skipped and the first few ids with their lines."""
    shown = ", ".join(f"{s.id} (line {s.line})" for s in skipped[:most])
    more = f" and {len(skipped) - most} more" if len(skipped) > most else ""
    return f"skipped {len(skipped)} document(s) with no text: {shown}{more}"
