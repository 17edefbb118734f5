"""Annotated data -> spaCy Docs: CoNLL-2003-style columns and JSONL span annotations.

`spacy convert` reads neither CoNLL-2003's `-DOCSTART- -X- -X- O` separators nor IOB1 reliably, and
validates little; these readers check every line, name the file and line of any problem, and only
repair data when asked to (counting each repair), so nothing is dropped or changed silently.
"""

import gzip
import json
import re
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple, Union

from spacy.language import Language
from spacy.tokens import Doc, DocBin, Span

CONLL_SCHEMES = ("auto", "iob1", "iob2")
DOCSTART = "-DOCSTART-"
# Column layouts by count: 2 = WNUT-17 (word tag), 4 = CoNLL-2003 (word POS chunk tag).
CONLL_LAYOUTS = {2: "word tag", 4: "word POS chunk tag"}
TAG_PATTERN = re.compile(r"^(O|[BI]-[^\s-](?:\S*[^\s-])?)$")


class ConversionError(ValueError):
    """Bad input data, located by file and line (or record)."""

    def __init__(self, path: Path, line: Optional[int], reason: str) -> None:
        location = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{location}: {reason}")
        self.path, self.line, self.reason = path, line, reason


@dataclass
class ConversionStats:
    """What a conversion produced, repaired and skipped; printed after every run."""

    docs: int = 0
    sentences: int = 0
    tokens: int = 0
    entities: Counter = field(default_factory=Counter)
    # Lossless changes of representation (IOB1 -> IOB2): information, not a problem with the data.
    converted: Counter = field(default_factory=Counter)
    repaired: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    scheme: str = ""
    # False when a CoNLL file has no -DOCSTART- lines, so each sentence became its own doc.
    grouped: bool = True

    def add_doc(self, doc: Doc) -> None:
        self.docs += 1
        self.sentences += sum(1 for _ in doc.sents) if doc.has_annotation("SENT_START") else 1
        self.tokens += len(doc)
        self.entities.update(ent.label_ for ent in doc.ents)


@dataclass
class Token:
    line: int
    word: str
    tag: str


Sentence = List[Token]


def read_lines(path: Path) -> Iterator[Tuple[int, str]]:
    """(1-based line number, text) of each line, requiring UTF-8 and a non-empty file; gzipped
    files (recognised by their magic number) are decompressed, a UTF-8 byte order mark dropped."""
    data = Path(path).read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError, zlib.error) as err:
            raise ConversionError(
                path, None, f"the gzip file is truncated or corrupt ({err}); fix or re-download it."
            ) from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if not data.strip():
        raise ConversionError(path, None, "the file is empty; expected annotated data.")
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            yield number, raw.decode("utf8")
        except UnicodeDecodeError as err:
            raise ConversionError(
                path,
                number,
                f"not valid UTF-8 (byte {raw[err.start]:#04x} at column {err.start + 1}); "
                "re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf8`.",
            ) from None


def read_conll_documents(path: Path) -> Tuple[List[List[Sentence]], bool]:
    """Documents (split at -DOCSTART- lines) of sentences (split at blank lines) of tokens, and
    whether the file marks documents at all (has a -DOCSTART- line)."""
    documents: List[List[Sentence]] = [[]]
    marked = False
    sentence: Sentence = []
    n_columns = 0
    first_line = 0
    for number, line in read_lines(path):
        columns = line.split("\t") if "\t" in line else line.split()
        if not columns or not line.strip():
            if sentence:
                documents[-1].append(sentence)
                sentence = []
            continue
        if columns[0] == DOCSTART:
            marked = True
            if sentence:
                documents[-1].append(sentence)
                sentence = []
            documents.append([])
            continue
        if not n_columns:
            if len(columns) not in CONLL_LAYOUTS:
                layouts = " or ".join(f"{n} ({name})" for n, name in CONLL_LAYOUTS.items())
                raise ConversionError(
                    path,
                    number,
                    f"unknown column layout: {len(columns)} columns; expected {layouts}, "
                    "separated by spaces or tabs.",
                )
            n_columns, first_line = len(columns), number
        elif len(columns) != n_columns:
            raise ConversionError(
                path,
                number,
                f"malformed line: {len(columns)} columns, but line {first_line} has "
                f"{n_columns}: {line!r}",
            )
        word, tag = columns[0].strip(), columns[-1].strip()
        if not word:
            raise ConversionError(
                path, number, f"empty word in the first column: {line!r}; every token needs one."
            )
        if not TAG_PATTERN.match(tag):
            raise ConversionError(
                path,
                number,
                f"invalid tag {tag!r}: expected O, B-<label> or I-<label> (IOB1 or IOB2).",
            )
        sentence.append(Token(number, word, tag))
    if sentence:
        documents[-1].append(sentence)
    documents = [doc for doc in documents if doc]
    if not documents:
        raise ConversionError(
            path, None, "no tokens: the file has only -DOCSTART- and blank lines."
        )
    return documents, marked


def _stray_inside(sentence: Sentence) -> Iterator[Tuple[int, Token]]:
    """Tokens tagged I-X that do not continue a B-X/I-X: invalid in IOB2, entity starts in IOB1."""
    previous = "O"
    for i, token in enumerate(sentence):
        if token.tag.startswith("I-") and previous[2:] != token.tag[2:]:
            yield i, token
        previous = token.tag


def detect_scheme(path: Path, documents: List[List[Sentence]]) -> str:
    """'iob2' if every entity starts with B-; 'iob1' if B- only separates adjacent same-type
    entities; otherwise an error, since the file mixes both."""
    sentences = [s for doc in documents for s in doc]
    stray = next((t for s in sentences for _, t in _stray_inside(s)), None)
    if stray is None:
        return "iob2"
    for sentence in sentences:
        previous = "O"
        for token in sentence:
            if token.tag.startswith("B-") and previous[2:] != token.tag[2:]:
                raise ConversionError(
                    path,
                    token.line,
                    f"{token.tag} starts an entity after {previous}, so the file is not IOB1, "
                    f"but line {stray.line} has {stray.tag} starting an entity, so it is not "
                    "IOB2 either. Pass --scheme iob2 --repair to turn stray I- tags into B-.",
                )
            previous = token.tag
    return "iob1"


def normalize_tags(
    path: Path, sentence: Sentence, scheme: str, repair: bool, stats: ConversionStats
) -> List[str]:
    """The sentence's tags in IOB2, converting IOB1 or repairing stray I- tags (if allowed)."""
    tags = [token.tag for token in sentence]
    for i, token in _stray_inside(sentence):
        if scheme == "iob1":
            stats.converted["IOB1 entity starts (I- after O or another type) written as B-"] += 1
        elif repair:
            stats.repaired["stray I- tag changed to B-"] += 1
        else:
            raise ConversionError(
                path,
                token.line,
                f"{token.tag} does not continue an entity (previous tag: "
                f"{tags[i - 1] if i else 'sentence start'}), which is invalid in IOB2. If the "
                "file is IOB1 pass --scheme iob1; to change stray I- tags to B- pass --repair.",
            )
        tags[i] = "B-" + token.tag[2:]
    return tags


def conll_to_docs(
    path: Path,
    nlp: Language,
    *,
    scheme: str = "auto",
    n_sents: int = 10,
    repair: bool = False,
    stats: Optional[ConversionStats] = None,
) -> Iterator[Doc]:
    """Docs from a CoNLL file: each holds up to `n_sents` consecutive sentences of one document
    (0 = the whole document), with sentence boundaries and entities set. Documents are marked by
    -DOCSTART- lines; in a file without any (tweets, single sentences), the sentences are
    unrelated, so each becomes its own doc whatever `n_sents` says (`stats.grouped` is False).

    scheme (str): "iob1", "iob2" or "auto" (detect from the tags).
    repair (bool): Change IOB2 I- tags that start an entity to B- instead of failing.
    """
    if scheme not in CONLL_SCHEMES:
        raise ValueError(f"Unknown tag scheme {scheme!r}: use one of {', '.join(CONLL_SCHEMES)}.")
    stats = stats if stats is not None else ConversionStats()
    documents, marked = read_conll_documents(path)
    if not marked:
        documents = [[sentence] for document in documents for sentence in document]
        stats.grouped = False
    if scheme == "auto":
        scheme = detect_scheme(path, documents)
    stats.scheme = scheme
    for document in documents:
        size = n_sents if n_sents > 0 else len(document)
        for i in range(0, len(document), size):
            group = document[i : i + size]
            words = [token.word for sentence in group for token in sentence]
            tags = [tag for s in group for tag in normalize_tags(path, s, scheme, repair, stats)]
            sent_starts: List[Union[bool, int, None]] = [
                j == 0 for sentence in group for j in range(len(sentence))
            ]
            doc = Doc(nlp.vocab, words=words, sent_starts=sent_starts, ents=tags)
            stats.add_doc(doc)
            yield doc


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
            raise ConversionError(path, line, f"invalid label {label!r} on span [{start}, {end}].")
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
    doc = nlp.make_doc(record["text"])
    ents: List[Span] = []
    for start, end, label in _parse_spans(path, line, record):
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


def jsonl_to_docs(
    path: Path,
    nlp: Language,
    *,
    repair: bool = False,
    stats: Optional[ConversionStats] = None,
) -> Iterator[Doc]:
    """Docs from JSONL records with "text" and character-offset entity spans, tokenized by `nlp`.

    repair (bool): Widen spans that cut through a token to that token's boundaries.
    """
    stats = stats if stats is not None else ConversionStats()
    for line, text in read_lines(path):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            reason = f"invalid JSON: {err.msg} (column {err.colno})."
            raise ConversionError(path, line, reason) from None
        doc = _record_to_doc(path, line, record, nlp, repair, stats)
        stats.add_doc(doc)
        yield doc


def detect_format(path: Path) -> str:
    """'jsonl' for .jsonl/.json(.gz) files, else 'conll'."""
    suffixes = [s.lower() for s in Path(path).suffixes if s.lower() != ".gz"]
    return "jsonl" if suffixes and suffixes[-1] in (".jsonl", ".json") else "conll"


def convert(
    input_path: Path,
    nlp: Language,
    *,
    file_format: str = "auto",
    scheme: str = "auto",
    n_sents: int = 10,
    repair: bool = False,
) -> Tuple[DocBin, ConversionStats]:
    """Read one annotated file into a DocBin, with statistics of what was read."""
    if n_sents < 0:
        raise ValueError(f"--n-sents must be 0 (whole documents) or more, not {n_sents}.")
    stats = ConversionStats()
    file_format = detect_format(input_path) if file_format == "auto" else file_format
    docs: Iterable[Doc]
    if file_format == "conll":
        docs = conll_to_docs(
            input_path, nlp, scheme=scheme, n_sents=n_sents, repair=repair, stats=stats
        )
    elif file_format == "jsonl":
        docs = jsonl_to_docs(input_path, nlp, repair=repair, stats=stats)
    else:
        raise ValueError(f"Unknown format {file_format!r}: use auto, conll or jsonl.")
    return DocBin(docs=docs, store_user_data=False), stats
