"""Annotate large text collections with a pipeline: streamed, resumable, nothing lost silently.

Input is plain text (one doc per line) or JSONL with a "text" field (other fields are kept), either
optionally gzipped. Output is JSONL, one line per input record, with its entities. A small
`OUTPUT.progress` file records how far the output is complete, so an interrupted run resumes
exactly where it stopped, without duplicating or losing records.
"""

import gzip
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, Iterator, List, Optional, Tuple, cast

from spacy.language import Language
from spacy.tokens import Doc

INPUT_FORMATS = ("auto", "text", "jsonl")
ON_ERROR = ("stop", "skip")


class RecordError(ValueError):
    """A bad input record, located by file and line."""

    def __init__(self, path: Path, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: {reason}")
        self.path, self.line, self.reason = path, line, reason


@dataclass
class Record:
    line: int
    text: str
    data: Dict[str, Any]  # the output record, without "entities" yet


@dataclass
class AnnotateStats:
    docs: int = 0
    entities: int = 0
    skipped: List[RecordError] = field(default_factory=list)
    resumed_after_line: int = 0


def input_format(path: Path, file_format: str = "auto") -> str:
    """'jsonl' for .jsonl/.json(.gz) files, 'text' otherwise, unless given."""
    if file_format != "auto":
        return file_format
    suffixes = [s.lower() for s in Path(path).suffixes if s.lower() != ".gz"]
    return "jsonl" if suffixes and suffixes[-1] in (".jsonl", ".json") else "text"


def open_input(path: Path) -> BinaryIO:
    """The file's bytes, decompressed if it is gzip (recognised by its magic number)."""
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return cast(BinaryIO, gzip.open(path, "rb"))
    return open(path, "rb")


def parse_line(path: Path, number: int, raw: bytes, file_format: str) -> Optional[Record]:
    """One input line as a Record; None for a blank JSONL line; RecordError if it is bad."""
    try:
        text = raw.decode("utf8").rstrip("\r\n")
    except UnicodeDecodeError as err:
        raise RecordError(path, number, f"not valid UTF-8 (byte {raw[err.start]:#04x}).") from None
    if file_format == "text":
        return Record(number, text, {"text": text})
    if not text.strip():
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise RecordError(path, number, f"invalid JSON: {err.msg}.") from None
    if not isinstance(data, dict) or not isinstance(data.get("text"), str):
        raise RecordError(path, number, 'expected a JSON object with a string "text" field.')
    return Record(number, data["text"], data)


def read_records(
    path: Path,
    file_format: str,
    *,
    after_line: int = 0,
    on_error: Callable[[RecordError], None],
) -> Iterator[Record]:
    """Stream the records after line `after_line`; bad ones go to `on_error` (which may raise)."""
    with open_input(path) as f:
        for number, raw in enumerate(f, start=1):
            if number <= after_line:
                continue
            try:
                record = parse_line(path, number, raw, file_format)
            except RecordError as err:
                on_error(err)
                continue
            if record is not None:
                yield record


def doc_entities(doc: Doc, spans_key: str = "bert_ner") -> List[Dict[str, Any]]:
    """`doc.ents` as JSON-ready dicts with character offsets and the component's confidence
    (None for entities another component set)."""
    scores: Dict[Tuple[int, int, str], float] = {}
    if spans_key in doc.spans:
        group = doc.spans[spans_key]
        scores = {
            (span.start, span.end, span.label_): float(score)
            for span, score in zip(group, group.attrs.get("scores", []))
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


def annotated_line(doc: Doc, record: Record, spans_key: str = "bert_ner") -> str:
    """The output JSONL line of one record: its fields plus "entities"."""
    output = {**record.data, "entities": doc_entities(doc, spans_key)}
    return json.dumps(output, ensure_ascii=False) + "\n"


class ResumableWriter:
    """Appends JSONL lines and, after each flushed chunk, records in OUTPUT.progress the output
    size and the last input line it covers. Resuming truncates the output to the recorded size,
    so a chunk written but not recorded is written again, never twice."""

    def __init__(self, path: Path, resume: bool) -> None:
        self.path = Path(path)
        self.progress_path = self.path.with_name(self.path.name + ".progress")
        self.after_line = 0
        offset = 0
        if resume and self.progress_path.exists():
            progress = json.loads(self.progress_path.read_text())
            self.after_line, offset = progress["line"], progress["offset"]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "r+b" if offset else "wb")  # noqa: SIM115 (closed by close())
        self.file.truncate(offset)
        self.file.seek(offset)

    def write(self, lines: List[str], last_line: int) -> None:
        self.file.write("".join(lines).encode("utf8"))
        self.file.flush()
        os.fsync(self.file.fileno())
        tmp = self.progress_path.with_name(self.progress_path.name + ".tmp")
        tmp.write_text(json.dumps({"line": last_line, "offset": self.file.tell()}))
        os.replace(tmp, self.progress_path)

    def close(self) -> None:
        self.file.close()


def annotate(
    nlp: Language,
    input_path: Path,
    output_path: Path,
    *,
    file_format: str = "auto",
    batch_size: Optional[int] = None,
    n_process: int = 1,
    on_error: str = "stop",
    resume: bool = False,
    progress: Optional[Callable[[int], None]] = None,
    spans_key: str = "bert_ner",
) -> AnnotateStats:
    """Annotate every record of `input_path` into `output_path` (JSONL with "entities").

    batch_size (Optional[int]): Docs per `nlp.pipe` batch (and per output chunk); None uses the
        pipeline's `nlp.batch_size`. The transformer sorts each batch by length and encodes it in
        sub-batches of similar length, so large batches mean little padding.
    on_error (str): "stop" raises RecordError at the first bad record; "skip" counts it in the
        returned stats and goes on.
    resume (bool): Continue an interrupted run from its OUTPUT.progress file.
    progress (Optional[Callable[[int], None]]): Called with the number of docs done each chunk.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"Unknown on_error {on_error!r}: use one of {', '.join(ON_ERROR)}.")
    stats = AnnotateStats()

    def handle(err: RecordError) -> None:
        if on_error == "stop":
            raise err
        stats.skipped.append(err)

    writer = ResumableWriter(output_path, resume)
    stats.resumed_after_line = writer.after_line
    records = read_records(
        input_path,
        input_format(input_path, file_format),
        after_line=writer.after_line,
        on_error=handle,
    )
    lines: List[str] = []
    last_line = writer.after_line

    def flush() -> None:
        writer.write(lines, last_line)
        if progress is not None and lines:
            progress(len(lines))
        lines.clear()

    try:
        texts = ((record.text, record) for record in records)
        for doc, record in nlp.pipe(
            texts, as_tuples=True, batch_size=batch_size, n_process=n_process
        ):
            lines.append(annotated_line(doc, record, spans_key))
            stats.docs += 1
            stats.entities += len(doc.ents)
            last_line = record.line
            if len(lines) >= (batch_size or nlp.batch_size):
                flush()
        if stats.skipped:
            last_line = max(last_line, stats.skipped[-1].line)
        flush()
    finally:
        writer.close()
    return stats
