"""Entity-level scoring, the package's one F1: exact-match precision, recall and F1 (conlleval's
semantics: an entity counts only when its boundaries and type both match), overall and per type.

The scores are spaCy's `get_ner_prf`, whether they come from training (the registered
`spacy_bert_ner.ner_scorer.v1`), from `analyze`, or from the benchmarks; `score_docs` and
`score_spans` only feed it gold and predicted entities and lay its result out as a table.
"""

from collections import Counter
from typing import Any, Callable, Dict, Iterable, List, Sequence, Tuple

from spacy.scorer import get_ner_prf
from spacy.tokens import Doc, Span
from spacy.training import Example
from spacy.util import registry
from spacy.vocab import Vocab

# An entity as (start token, end token, label), end exclusive.
EntitySpan = Tuple[int, int, str]


def score_ents(examples: Iterable[Example], **kwargs: Any) -> Dict[str, Any]:
    """Score predicted `doc.ents` against the reference, conlleval-style: boundaries and type must
    both match. Returns `ents_p`, `ents_r`, `ents_f` and `ents_per_type`."""
    return get_ner_prf(examples, **kwargs)


@registry.scorers("spacy_bert_ner.ner_scorer.v1")
def make_ner_scorer() -> Callable[..., Dict[str, Any]]:
    return score_ents


def doc_spans(doc: Doc) -> List[EntitySpan]:
    """A Doc's entities as (start, end, label)."""
    return [(ent.start, ent.end, ent.label_) for ent in doc.ents]


def score_docs(gold_docs: Sequence[Doc], pred_docs: Sequence[Doc]) -> Dict[str, Any]:
    """`score_ents` of predicted Docs against gold Docs (the same words, in the same order), as
    conlleval prints it: percentages rounded to two decimals and the counts behind them, overall
    and per type, {"p", "r", "f", "tp", "n_pred", "n_gold", "n_docs", "per_type": {label: {"p",
    "r", "f", "tp", "n_pred", "n_gold"}}}."""
    if len(gold_docs) != len(pred_docs):
        raise ValueError(f"{len(gold_docs)} gold documents but {len(pred_docs)} predicted ones.")
    # spaCy skips a reference without entity annotation and predictions on tokens whose tag is
    # missing; gold data says "no entity" there, so such tokens are read as O (outside).
    examples = [Example(pred, _fully_annotated(gold)) for gold, pred in zip(gold_docs, pred_docs)]
    scores = score_ents(examples)
    n_gold = Counter(ent.label_ for doc in gold_docs for ent in doc.ents)
    n_pred = Counter(ent.label_ for doc in pred_docs for ent in doc.ents)
    per_type = scores["ents_per_type"] or {}
    return {
        **_row(
            scores["ents_p"],
            scores["ents_r"],
            scores["ents_f"],
            sum(n_pred.values()),
            sum(n_gold.values()),
        ),
        "n_docs": len(gold_docs),
        "per_type": {
            label: _row(prf["p"], prf["r"], prf["f"], n_pred[label], n_gold[label])
            for label, prf in sorted(per_type.items())
        },
    }


def score_spans(
    gold: Iterable[Iterable[EntitySpan]], pred: Iterable[Iterable[EntitySpan]]
) -> Dict[str, Any]:
    """`score_docs` for systems whose entities are (start, end, label) lists, one per document
    (in the same order): each document's entities are set, as `doc.ents`, on placeholder words."""
    gold_docs, pred_docs = list(gold), list(pred)
    if len(gold_docs) != len(pred_docs):
        raise ValueError(f"{len(gold_docs)} gold documents but {len(pred_docs)} predicted ones.")
    vocab = Vocab()
    docs: Tuple[List[Doc], List[Doc]] = ([], [])
    for gold_spans, pred_spans in zip(gold_docs, pred_docs):
        gold_set, pred_set = set(gold_spans), set(pred_spans)
        length = max((end for _, end, _ in gold_set | pred_set), default=0)
        for spans, out in ((gold_set, docs[0]), (pred_set, docs[1])):
            doc = Doc(vocab, words=["_"] * length)
            doc.ents = [Span(doc, start, end, label) for start, end, label in sorted(spans)]
            out.append(doc)
    return score_docs(*docs)


def _fully_annotated(doc: Doc) -> Doc:
    """The Doc, or a copy of it whose tokens without an entity tag are O."""
    if all(token.ent_iob != 0 for token in doc):
        return doc
    copy = doc.copy()
    copy.set_ents(list(copy.ents), default="outside")
    return copy


def _row(p: Any, r: Any, f: Any, n_pred: int, n_gold: int) -> Dict[str, Any]:
    """Percentages and counts. spaCy gives rates (None when nothing was scored); the true
    positives are read back from the recall, whose denominator is the gold count."""
    return {
        "p": round(100 * (p or 0.0), 2),
        "r": round(100 * (r or 0.0), 2),
        "f": round(100 * (f or 0.0), 2),
        "tp": round((r or 0.0) * n_gold),
        "n_pred": n_pred,
        "n_gold": n_gold,
    }
