"""Annotate's output records: each input record with its doc's entities, as strict JSON."""

import json
import math
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from spacy.language import Language
from spacy.tokens import Doc

from .reading import Record

# The component whose entity scores annotate writes, found by its factory name (annotate only
# reads a pipeline's output: it need not import the component).
BERT_NER_FACTORY = "bert_ner"


def pipeline_spans_key(nlp: Language) -> Optional[str]:
    """The `spans_key` of the pipeline's bert_ner component (where its entity scores are), or
    None for a pipeline without one."""
    return next(
        (
            getattr(pipe, "spans_key", None)
            for name, pipe in nlp.pipeline
            if nlp.get_pipe_meta(name).factory == BERT_NER_FACTORY
        ),
        None,
    )


def doc_entities(doc: Doc, spans_key: str = "bert_ner") -> List[Dict[str, Any]]:
    """`doc.ents` as JSON-ready dicts with character offsets and the component's confidence
    (None for entities another component set)."""
    scores: Dict[Tuple[int, int, str], float] = {}
    if spans_key in doc.spans:
        group = doc.spans[spans_key]
        scores = {
            (span.start, span.end, span.label_): float(score)
            for span, score in zip(group, group.attrs.get("scores", []))
            if math.isfinite(float(score))  # no NaN in strict JSON: an unknown score is null
        }
    return [
        {
            "start": ent.start_char,
            "end": ent.end_char,
            "label": ent.label_,
            "text": ent.text,
            "score": scores.get((ent.start, ent.end, ent.label_)),
        }
        for ent in doc.ents
    ]


class Annotated(NamedTuple):
    """One output record: its input line and its JSON (the input's fields plus "entities")."""

    line: int
    json: str


def annotated(doc: Doc, record: Record, spans_key: str = "bert_ner") -> Annotated:
    """The output record of one input record and its doc."""
    output = {**record.data, "entities": doc_entities(doc, spans_key)}
    # allow_nan=False: strict JSON (RFC 8259); the input's numbers were checked by parse_line.
    return Annotated(record.line, json.dumps(output, ensure_ascii=False, allow_nan=False))
