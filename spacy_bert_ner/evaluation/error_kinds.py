"""Error classification: each wrong entity sorted into the kind of error that suggests its fix.

A wrong type on the right words, the right type on the wrong words, both, a missed entity, or a
spurious one. The scores that go with the errors are `spacy_bert_ner.scorer`'s.
"""

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from spacy.tokens import Doc, Span

from ..scorer import EntitySpan, doc_spans, score_docs

ERROR_KINDS = ("type", "boundary", "boundary+type", "missed", "spurious")
ERROR_KIND_HELP = {
    "type": "right words, wrong type",
    "boundary": "right type, overlapping but different words",
    "boundary+type": "overlapping words, wrong type",
    "missed": "gold entity with no overlapping prediction",
    "spurious": "prediction with no overlapping gold entity",
}
NO_LABEL = "-"


@dataclass(frozen=True)
class EntityError:
    """One error: the gold and/or predicted entity involved (None where there is none)."""

    kind: str
    gold: Optional[EntitySpan]
    pred: Optional[EntitySpan]

    @property
    def labels(self) -> Tuple[str, str]:
        """(gold label, predicted label), with "-" for a missing side."""
        return (self.gold[2] if self.gold else NO_LABEL, self.pred[2] if self.pred else NO_LABEL)


def _overlaps(a: EntitySpan, b: EntitySpan) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def classify_errors(
    gold_spans: Iterable[EntitySpan], pred_spans: Iterable[EntitySpan]
) -> List[EntityError]:
    """The errors in one document: each wrong prediction is paired with the gold entity it
    overlaps most (type / boundary / boundary+type errors) or is spurious; each gold entity that no
    wrong prediction overlaps and that was not found is missed."""
    gold_set, pred_set = set(gold_spans), set(pred_spans)
    wrong_gold = sorted(gold_set - pred_set)
    wrong_pred = sorted(pred_set - gold_set)
    errors: List[EntityError] = []
    explained: Set[EntitySpan] = set()
    for pred in wrong_pred:
        overlapping = [g for g in wrong_gold if _overlaps(g, pred)]
        if not overlapping:
            errors.append(EntityError("spurious", None, pred))
            continue
        gold = max(overlapping, key=lambda g: min(g[1], pred[1]) - max(g[0], pred[0]))
        explained.update(overlapping)
        if gold[:2] == pred[:2]:
            kind = "type"
        else:
            kind = "boundary" if gold[2] == pred[2] else "boundary+type"
        errors.append(EntityError(kind, gold, pred))
    errors.extend(EntityError("missed", g, None) for g in wrong_gold if g not in explained)
    return sorted(errors, key=lambda e: (e.gold or e.pred or (0, 0, ""))[:2])


@dataclass
class ErrorReport:
    """Scores and errors of predictions against gold Docs (the same words, in the same order)."""

    scores: Dict[str, Any]
    errors: List[Tuple[int, EntityError]] = field(default_factory=list)

    def confusions(self) -> List[Tuple[Tuple[str, str, str], int]]:
        """(kind, gold label, predicted label) with their counts, most frequent first."""
        counts = Counter((e.kind, *e.labels) for _, e in self.errors)
        return counts.most_common()

    def kind_counts(self) -> Dict[str, int]:
        counts = Counter(e.kind for _, e in self.errors)
        return {kind: counts[kind] for kind in ERROR_KINDS}


def compare(gold_docs: Sequence[Doc], pred_docs: Sequence[Doc]) -> ErrorReport:
    """Score predicted Docs against gold Docs and classify every error."""
    if len(gold_docs) != len(pred_docs):
        raise ValueError(f"{len(gold_docs)} gold docs but {len(pred_docs)} predicted docs.")
    for i, (gold, pred) in enumerate(zip(gold_docs, pred_docs)):
        if [t.text for t in gold] != [t.text for t in pred]:
            raise ValueError(f"Doc {i}: the predicted doc's words differ from the gold doc's.")
    errors = [
        (i, error)
        for i, (gold, pred) in enumerate(zip(gold_docs, pred_docs))
        for error in classify_errors(doc_spans(gold), doc_spans(pred))
    ]
    return ErrorReport(score_docs(gold_docs, pred_docs), errors)


def error_sentence(doc: Doc, error: EntityError) -> Span:
    """The sentence an error is in (that of its gold entity, else its prediction), or the whole
    Doc when it has no sentence boundaries."""
    anchor = error.gold or error.pred
    assert anchor is not None
    if doc.has_annotation("SENT_START"):
        return doc[anchor[0]].sent
    return doc[:]
