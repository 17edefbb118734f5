"""JSONL span annotations -> spaCy Docs: `{"text", "spans"}` records, doccano's `label` and
`entities` exports, tokenized with the pipeline's tokenizer."""

import json
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from spacy.language import Language
from spacy.tokens import Doc, Span

from .common import ConversionError, ConversionStats, check_label, describe_invisible, read_lines


def _parse_spans(path: Path, line: int, record: Dict[str, Any]) -> List[Tuple[int, int, str]]:
    """Character spans from {"spans": [{"start", "end", "label"}]}, doccano's {"label": [[s, e,
    l]]} or {"entities": [{"start_offset", "end_offset", "label"}]} (newer doccano exports; "start"
    and "end" are read too, as `annotate` writes them); a record has at most one of the three."""
    keys = [key for key in ("spans", "label", "entities") if key in record]
    if len(keys) > 1:
        raise ConversionError(
            path,
            line,
            f"the record has both {keys[0]!r} and {keys[1]!r}: give its entities under one key, "
            "so that none are left out.",
        )
    key = keys[0] if keys else None
    if key in ("spans", "entities"):
        raw = record[key]
        if not isinstance(raw, list) or not all(isinstance(s, dict) for s in raw):
            raise ConversionError(path, line, f'"{key}" must be a list of objects.')
        try:
            spans = [_object_span(span, key) for span in raw]
        except KeyError as err:
            raise ConversionError(path, line, f'a span in "{key}" lacks the key {err}.') from None
    elif key == "label":
        raw = record["label"]
        if not isinstance(raw, list) or not all(isinstance(s, list) and len(s) == 3 for s in raw):
            raise ConversionError(path, line, '"label" must be a list of [start, end, label].')
        spans = [(s[0], s[1], s[2]) for s in raw]
    else:
        spans = []
    text_length = len(record["text"])
    for start, end, label in spans:
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (start, end)):
            raise ConversionError(
                path,
                line,
                f"span [{start!r}, {end!r}]: start and end must be whole numbers (character "
                'offsets), like 0 and 5, not 0.0 or "5".',
            )
        if not 0 <= start < end:
            raise ConversionError(path, line, f"span [{start}, {end}] needs 0 <= start < end.")
        if end > text_length:
            raise ConversionError(
                path, line, f"span [{start}, {end}] ends past the text ({text_length} chars)."
            )
        if not isinstance(label, str) or not label.strip() or label != label.strip():
            raise ConversionError(
                path,
                line,
                f"invalid label {label!r} on span [{start}, {end}]"
                f"{describe_invisible(label) if isinstance(label, str) else ''}.",
            )
        _check_encodable(path, line, label, f"the label of span [{start}, {end}]")
        if not record["text"][start:end].strip():
            raise ConversionError(
                path,
                line,
                f"span [{start}, {end}] ({label}) covers only whitespace "
                f"{record['text'][start:end]!r}; fix its offsets.",
            )
    return sorted(spans)


def _object_span(span: Dict[str, Any], key: str) -> Tuple[Any, Any, Any]:
    """(start, end, label) of a span object: doccano's "entities" name the offsets
    "start_offset" and "end_offset", "spans" (and `annotate`'s "entities") "start" and "end"."""
    if key == "entities" and "start_offset" in span:
        return span["start_offset"], span["end_offset"], span["label"]
    return span["start"], span["end"], span["label"]


def _record_to_doc(
    path: Path, line: int, record: Any, nlp: Language, repair: bool, stats: ConversionStats
) -> Doc:
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        raise ConversionError(path, line, 'expected a JSON object with a string "text" field.')
    _check_encodable(path, line, record["text"], 'the "text"')
    doc = nlp.make_doc(record["text"])
    ents: List[Span] = []
    for start, end, label in _parse_spans(path, line, record):
        check_label(path, line, label, stats)
        span = doc.char_span(start, end, label=label)
        if span is None and repair:
            span = doc.char_span(start, end, label=label, alignment_mode="expand")
            stats.repaired["span widened to token boundaries"] += 1
        if span is None:
            raise ConversionError(
                path,
                line,
                f"span [{start}, {end}] {record['text'][start:end]!r} ({label}) does not start "
                "and end on token boundaries; fix the offsets, or pass --repair to widen it to "
                "the tokens it touches.",
            )
        if ents and span.start < ents[-1].end:
            raise ConversionError(
                path,
                line,
                f"span [{start}, {end}] ({label}) overlaps {ents[-1].text!r} "
                f"({ents[-1].label_}); entities must not overlap.",
            )
        ents.append(span)
    doc.ents = ents
    return doc


def _check_encodable(path: Path, line: int, text: str, what: str) -> None:
    """Refuse a lone surrogate (a JSON escape like \\ud800 without its pair): it is not a
    character, and no UTF-8 file (a .spacy file included) can hold it."""
    try:
        text.encode("utf8")
    except UnicodeEncodeError as err:
        raise ConversionError(
            path,
            line,
            f"{what} has a lone surrogate {text[err.start]!r} at character {err.start}: a "
            "\\uD800-\\uDFFF escape must be one of a high-low pair. Fix the escape, or drop it.",
        ) from None


def jsonl_to_docs(
    path: Path,
    nlp: Language,
    *,
    repair: bool = False,
    stats: Optional[ConversionStats] = None,
    source: Optional[Path] = None,
) -> Iterator[Doc]:
    """Docs from JSONL records with "text" and character-offset entity spans, tokenized by `nlp`,
    a line at a time.

    repair (bool): Widen spans that cut through a token to that token's boundaries.
    source (Path): Read this copy of `path` instead (messages name `path`).
    """
    stats = stats if stats is not None else ConversionStats()
    for line, text in read_lines(path, source):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            reason = f"invalid JSON: {err.msg} (column {err.colno})."
            raise ConversionError(path, line, reason) from None
        except RecursionError:
            raise ConversionError(
                path, line, "the JSON is nested too deeply to read; a record is one flat object."
            ) from None
        doc = _record_to_doc(path, line, record, nlp, repair, stats)
        stats.add_doc(doc)
        yield doc
