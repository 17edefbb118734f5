"""Error analysis of a pipeline on gold data (the `analyze` command): the scores, the errors by
kind with examples in context, each predicted entity's confidence and whether it was right, saved
as errors.json (which the training report draws) beside the errors page."""

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import srsly
from spacy.language import Language
from spacy.tokens import Doc, Span
from wasabi import msg

from ..annotate.outputs import pipeline_spans_key
from ..scorer import EntitySpan, doc_spans
from .corpus import predict_corpus, read_gold_docs
from .error_kinds import ERROR_KIND_HELP, ErrorReport, compare, error_sentence
from .errors_page import errors_html


def analyze(
    nlp: Language,
    data_path: Path,
    output_dir: Path,
    *,
    n_sents: int = 10,
    scheme: str = "auto",
    repair: bool = False,
    max_examples: int = 5,
    batch_size: Optional[int] = None,
    title: Optional[str] = None,
) -> Dict[str, Any]:
    """Predict the gold data at `data_path` (a DocBin, or what `convert` reads, with its
    `n_sents`, `scheme` and `repair`) with `nlp`, write `output_dir`/errors.json (`analysis_json`)
    and `output_dir`/errors.html (`errors_html`), print the analysis and return it. Raises
    ValueError, naming the file, for gold data that cannot be read."""
    gold_docs = read_gold_docs(data_path, nlp, n_sents, scheme=scheme, repair=repair)
    _warn_unpredicted_labels(nlp, gold_docs, data_path)
    msg.info(f"Predicting {len(gold_docs)} docs from {data_path}")
    pred_docs = predict_corpus(nlp, gold_docs, batch_size=batch_size)
    report = compare(gold_docs, pred_docs)
    spans_key = pipeline_spans_key(nlp)
    scores = entity_scores(gold_docs, pred_docs, spans_key) if spans_key else None
    analysis = analysis_json(report, gold_docs, max_examples, scores=scores)
    output_dir.mkdir(parents=True, exist_ok=True)
    srsly.write_json(output_dir / "errors.json", analysis)
    page = errors_html(report, gold_docs, pred_docs, title=title or f"Errors on {data_path.name}")
    (output_dir / "errors.html").write_text(page, encoding="utf8")
    print_analysis(analysis)
    msg.good(f"Saved {output_dir / 'errors.json'} and {output_dir / 'errors.html'}")
    return analysis


# Components whose labels are entity labels (spaCy's own, and this package's).
ENTITY_FACTORIES = ("bert_ner", "ner", "beam_ner", "entity_ruler", "span_ruler")


def _warn_unpredicted_labels(nlp: Language, gold_docs: Sequence[Doc], data_path: Path) -> None:
    """Warn about gold labels no entity component of the pipeline predicts: each of their
    entities can only be missed (the gold data may use another scheme, e.g. PERSON for PER)."""
    predicted = {
        label
        for name, labels in nlp.pipe_labels.items()
        if nlp.get_pipe_meta(name).factory in ENTITY_FACTORIES
        for label in labels
    }
    gold = Counter(ent.label_ for doc in gold_docs for ent in doc.ents)
    unknown = {label: n for label, n in sorted(gold.items()) if label not in predicted}
    if predicted and unknown:
        counts = ", ".join(f"{label} ({n})" for label, n in unknown.items())
        msg.warn(
            f"{data_path}: gold labels the pipeline does not predict: {counts}. Every such "
            f"entity counts as missed. The pipeline predicts {', '.join(sorted(predicted))}; "
            "check that the gold data uses the same labels."
        )


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
        sentence = error_sentence(doc, error)
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


def print_analysis(analysis: Dict[str, Any], n_confusions: int = 10) -> None:
    """Scores per type, error counts, and the most frequent confusions with one example each."""
    scores = analysis["scores"]
    rows = [
        (label, f"{s['p']:.2f}", f"{s['r']:.2f}", f"{s['f']:.2f}", s["n_gold"])
        for label, s in [("ALL", scores), *scores["per_type"].items()]
    ]
    msg.table(
        rows, header=("type", "P", "R", "F", "gold"), divider=True, aligns=("l", "r", "r", "r", "r")
    )
    msg.table(list(analysis["error_kinds"].items()), header=("error", "count"), divider=True)
    rows = [
        (c["kind"], c["gold"], c["pred"], c["count"], _example(c["examples"][0]))
        for c in analysis["confusions"][:n_confusions]
    ]
    header = ("error", "gold", "predicted", "count", "example: gold → predicted")
    if rows:
        msg.table(rows, header=header, divider=True, max_col=60)


def _example(example: Dict[str, Any]) -> str:
    """'gold words' → 'predicted words', with — for a missing side."""
    gold, pred = (f"'{example[side]}'" if example[side] else "—" for side in ("gold", "pred"))
    return f"{gold} → {pred}"
