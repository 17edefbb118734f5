"""Entity-level evaluation and error analysis, the same for any NER system.

Scores are conlleval's: an entity is correct only when its boundaries and type both match.
Errors are sorted into the kinds that suggest different fixes: a wrong type on the right words, the
right type on the wrong words, both, a missed entity, or a spurious one.
"""

import html
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from spacy import displacy
from spacy.language import Language
from spacy.tokens import Doc, Span

# (start token, end token, label), end exclusive.
EntitySpan = Tuple[int, int, str]

ERROR_KINDS = ("type", "boundary", "boundary+type", "missed", "spurious")
ERROR_KIND_HELP = {
    "type": "right words, wrong type",
    "boundary": "right type, overlapping but different words",
    "boundary+type": "overlapping words, wrong type",
    "missed": "gold entity with no overlapping prediction",
    "spurious": "prediction with no overlapping gold entity",
}
NO_LABEL = "-"


@dataclass
class Counts:
    """True positives, predictions and gold entities, for precision, recall and F1."""

    tp: int = 0
    n_pred: int = 0
    n_gold: int = 0

    @property
    def p(self) -> float:
        return self.tp / self.n_pred if self.n_pred else 0.0

    @property
    def r(self) -> float:
        return self.tp / self.n_gold if self.n_gold else 0.0

    @property
    def f(self) -> float:
        return 2 * self.p * self.r / (self.p + self.r) if self.p + self.r else 0.0

    def to_dict(self) -> Dict[str, Any]:
        """Percentages (as conlleval prints them) and the counts behind them."""
        return {
            "p": round(100 * self.p, 2),
            "r": round(100 * self.r, 2),
            "f": round(100 * self.f, 2),
            "tp": self.tp,
            "n_pred": self.n_pred,
            "n_gold": self.n_gold,
        }


def score_spans(
    gold: Iterable[Iterable[EntitySpan]], pred: Iterable[Iterable[EntitySpan]]
) -> Dict[str, Any]:
    """Exact-match entity P/R/F (conlleval semantics), overall and per type, from the gold and
    predicted entities of each document (in the same order)."""
    total = Counts()
    per_type: Dict[str, Counts] = defaultdict(Counts)
    gold_docs, pred_docs = list(gold), list(pred)
    if len(gold_docs) != len(pred_docs):
        raise ValueError(f"{len(gold_docs)} gold documents but {len(pred_docs)} predicted ones.")
    for gold_spans, pred_spans in zip(gold_docs, pred_docs):
        gold_set, pred_set = set(gold_spans), set(pred_spans)
        total.n_gold += len(gold_set)
        total.n_pred += len(pred_set)
        for _, _, label in gold_set:
            per_type[label].n_gold += 1
        for _, _, label in pred_set:
            per_type[label].n_pred += 1
        for _, _, label in gold_set & pred_set:
            total.tp += 1
            per_type[label].tp += 1
    return {
        **total.to_dict(),
        "n_docs": len(gold_docs),
        "per_type": {label: per_type[label].to_dict() for label in sorted(per_type)},
    }


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


def doc_spans(doc: Doc) -> List[EntitySpan]:
    """A Doc's entities as (start, end, label)."""
    return [(ent.start, ent.end, ent.label_) for ent in doc.ents]


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
    gold_spans = [doc_spans(doc) for doc in gold_docs]
    pred_spans = [doc_spans(doc) for doc in pred_docs]
    errors = [
        (i, error)
        for i, (gold, pred) in enumerate(zip(gold_spans, pred_spans))
        for error in classify_errors(gold, pred)
    ]
    return ErrorReport(score_spans(gold_spans, pred_spans), errors)


def predict(nlp: Language, gold_docs: Iterable[Doc], batch_size: Optional[int] = None) -> List[Doc]:
    """Run a pipeline over the words of gold Docs (their tokenization, none of their entities)."""
    unannotated = (
        Doc(nlp.vocab, words=[t.text for t in doc], spaces=[bool(t.whitespace_) for t in doc])
        for doc in gold_docs
    )
    return list(nlp.pipe(unannotated, batch_size=batch_size))


def _sentence(doc: Doc, token_index: int) -> Span:
    """The sentence around a token, or the whole Doc when it has no sentence boundaries."""
    if doc.has_annotation("SENT_START"):
        return doc[token_index].sent
    return doc[:]


def _marked(sentence: Span, spans: Sequence[EntitySpan]) -> str:
    """The sentence's text with each span in [[brackets]]."""
    words = []
    for token in sentence:
        text = token.text
        if any(start == token.i for start, _, _ in spans):
            text = "[[" + text
        if any(end == token.i + 1 for _, end, _ in spans):
            text += "]]"
        words.append(text)
    return " ".join(words)


def error_examples(
    report: ErrorReport, gold_docs: Sequence[Doc], max_examples: int = 5
) -> List[Dict[str, Any]]:
    """The confusions, most frequent first, each with up to `max_examples` examples in context."""
    examples: Dict[Tuple[str, str, str], List[Dict[str, Any]]] = defaultdict(list)
    for doc_index, error in report.errors:
        key = (error.kind, *error.labels)
        if len(examples[key]) >= max_examples:
            continue
        doc = gold_docs[doc_index]
        anchor = error.gold or error.pred
        assert anchor is not None
        sentence = _sentence(doc, anchor[0])
        examples[key].append(
            {
                "doc": doc_index,
                "gold": doc[error.gold[0] : error.gold[1]].text if error.gold else None,
                "pred": doc[error.pred[0] : error.pred[1]].text if error.pred else None,
                "gold_in_context": _marked(sentence, [error.gold] if error.gold else []),
                "pred_in_context": _marked(sentence, [error.pred] if error.pred else []),
            }
        )
    return [
        {"kind": kind, "gold": gold, "pred": pred, "count": count, "examples": examples[key]}
        for key, count in report.confusions()
        for kind, gold, pred in [key]
    ]


def entity_scores(
    gold_docs: Sequence[Doc], pred_docs: Sequence[Doc], spans_key: str
) -> Dict[str, List[Any]]:
    """Every predicted entity of the span group `spans_key` with the confidence its
    `attrs["scores"]` gives it, and whether it is correct (its boundaries and type match a gold
    entity), as columns: {"labels": [...], "scores": [...], "correct": [...]}. Docs without such a
    group (a system that gives no confidences) add nothing."""
    columns: Dict[str, List[Any]] = {"labels": [], "scores": [], "correct": []}
    for gold, pred in zip(gold_docs, pred_docs):
        group = pred.spans.get(spans_key)
        if group is None or "scores" not in group.attrs:
            continue
        gold_set = set(doc_spans(gold))
        for span, score in zip(group, group.attrs["scores"]):
            columns["labels"].append(span.label_)
            columns["scores"].append(round(float(score), 4))
            columns["correct"].append((span.start, span.end, span.label_) in gold_set)
    return columns


def analysis_json(
    report: ErrorReport,
    gold_docs: Sequence[Doc],
    max_examples: int = 5,
    scores: Optional[Dict[str, List[Any]]] = None,
) -> Dict[str, Any]:
    """Everything the analysis found, JSON-serializable; with `scores` (from `entity_scores`), the
    predicted entities' confidences too, as "entity_scores"."""
    analysis = {
        "scores": report.scores,
        "error_kinds": report.kind_counts(),
        "error_kind_help": ERROR_KIND_HELP,
        "confusions": error_examples(report, gold_docs, max_examples),
    }
    if scores is not None:
        analysis["entity_scores"] = scores
    return analysis


def _error_sentence_doc(gold: Doc, pred: Doc, sentence: Span, errors: Sequence[EntityError]) -> Doc:
    """A copy of one sentence whose span group holds its gold ("gold X") and predicted ("pred X")
    entities, for displaCy's span view, titled with the sentence's errors."""
    words = [t.text for t in sentence]
    spaces = [bool(t.whitespace_) for t in sentence]
    doc = Doc(gold.vocab, words=words, spaces=spaces)
    offset = sentence.start
    spans = []
    for source, prefix in ((gold, "gold"), (pred, "pred")):
        for ent in source.ents:
            if ent.start >= sentence.start and ent.end <= sentence.end:
                spans.append(
                    Span(doc, ent.start - offset, ent.end - offset, f"{prefix} {ent.label_}")
                )
    doc.spans["errors"] = spans
    doc.user_data["title"] = "; ".join(describe(error, gold) for error in errors)
    return doc


def describe(error: EntityError, doc: Doc) -> str:
    """One line for an error, e.g. "type: 'Paris' LOC predicted as ORG"."""
    gold = f"'{doc[error.gold[0] : error.gold[1]].text}' {error.gold[2]}" if error.gold else ""
    pred = f"'{doc[error.pred[0] : error.pred[1]].text}' {error.pred[2]}" if error.pred else ""
    if error.kind == "missed":
        return f"missed: {gold}"
    if error.kind == "spurious":
        return f"spurious: {pred}"
    if error.kind == "type":
        return f"type: {gold} predicted as {error.labels[1]}"
    return f"{error.kind}: {gold} predicted as {pred}"


def errors_html(
    report: ErrorReport,
    gold_docs: Sequence[Doc],
    pred_docs: Sequence[Doc],
    title: str = "bert_ner errors",
    max_sentences: int = 500,
) -> str:
    """A standalone HTML page: the scores, the error counts, and each sentence with an error shown
    with displaCy, gold entities above predicted ones."""
    by_sentence: Dict[Tuple[int, int], List[EntityError]] = defaultdict(list)
    for doc_index, error in report.errors:
        span = error.gold or error.pred
        assert span is not None
        sentence = _sentence(gold_docs[doc_index], span[0])
        by_sentence[(doc_index, sentence.start)].append(error)
    labels = sorted({label for doc in gold_docs for label in (e.label_ for e in doc.ents)})
    labels += sorted({e.label_ for doc in pred_docs for e in doc.ents} - set(labels))
    colors = {f"gold {label}": "#a6e22e" for label in labels}
    colors.update({f"pred {label}": "#fd971f" for label in labels})
    rendered = []
    for doc_index, sent_start in sorted(by_sentence)[:max_sentences]:
        gold, pred = gold_docs[doc_index], pred_docs[doc_index]
        sentence = _sentence(gold, sent_start)
        doc = _error_sentence_doc(gold, pred, sentence, by_sentence[(doc_index, sent_start)])
        rendered.append(
            displacy.render(
                doc,
                style="span",
                options={"spans_key": "errors", "colors": colors},
                jupyter=False,
            )
        )
    scores = report.scores
    rows = "".join(
        f"<tr><td>{html.escape(label)}</td><td>{s['p']:.2f}</td><td>{s['r']:.2f}</td>"
        f"<td>{s['f']:.2f}</td><td>{s['n_gold']}</td></tr>"
        for label, s in [("ALL", scores), *scores["per_type"].items()]
    )
    kinds = "".join(
        f"<li><b>{kind}</b> ({ERROR_KIND_HELP[kind]}): {count}</li>"
        for kind, count in report.kind_counts().items()
    )
    shown = min(len(by_sentence), max_sentences)
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}"
        "</title><style>body{font-family:sans-serif;margin:2em}td,th{padding:0 1em;"
        "text-align:right}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><table><tr><th>type</th><th>P</th><th>R</th><th>F</th>"
        f"<th>gold</th></tr>{rows}</table><h2>Errors</h2><ul>{kinds}</ul>"
        f"<h2>Sentences with errors ({shown} of {len(by_sentence)})</h2>"
        "<p>Green: gold entities; orange: predictions.</p>" + "".join(rendered) + "</body></html>"
    )
