"""The errors page: one standalone HTML page (displaCy's span view) of every sentence with an
error, gold entities above predicted ones, under the scores and the error counts (the training
report links it).
"""

import html
from collections import defaultdict
from typing import Dict, List, Sequence, Tuple

from spacy import displacy
from spacy.tokens import Doc, Span

from .error_kinds import ERROR_KIND_HELP, EntityError, ErrorReport, error_sentence


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
    sentences: Dict[Tuple[int, int], Span] = {}
    for doc_index, error in report.errors:
        sentence = error_sentence(gold_docs[doc_index], error)
        by_sentence[(doc_index, sentence.start)].append(error)
        sentences[(doc_index, sentence.start)] = sentence
    labels = sorted({label for doc in gold_docs for label in (e.label_ for e in doc.ents)})
    labels += sorted({e.label_ for doc in pred_docs for e in doc.ents} - set(labels))
    colors = {f"gold {label}": "#a6e22e" for label in labels}
    colors.update({f"pred {label}": "#fd971f" for label in labels})
    rendered = []
    for key in sorted(by_sentence)[:max_sentences]:
        doc_index = key[0]
        gold, pred = gold_docs[doc_index], pred_docs[doc_index]
        doc = _error_sentence_doc(gold, pred, sentences[key], by_sentence[key])
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
