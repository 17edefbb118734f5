"""Annotate large text collections with a pipeline: streamed, resumable, nothing lost silently.

Input is plain text (one doc per line) or JSONL with a "text" field (other fields are kept), either
optionally gzipped. Output is JSONL, one line per input record, with its entities. A small
`OUTPUT.progress` file records how far the output is complete, so an interrupted run resumes
exactly where it stopped, without duplicating or losing records.
"""

import contextlib
import gzip
import hashlib
import json
import os
import zlib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Deque, Dict, Iterator, List, Optional, Tuple, cast

from spacy.language import Language
from spacy.tokens import Doc

from .pipeline_component import BertNER

INPUT_FORMATS = ("auto", "text", "jsonl")
ON_ERROR = ("stop", "skip")


class AnnotateError(ValueError):
    """A run that cannot start or go on safely (the output, its progress record, the input); the
    message says what to do."""


class TruncatedInputError(AnnotateError):
    """The input ended inside a compressed stream; everything decoded before was annotated."""


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
    if number == 1 and text.startswith("\ufeff"):  # a UTF-8 byte order mark
        text = text[1:]
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
    try:  # a JSON-escaped lone surrogate ("\\ud800") decodes, but no UTF-8 output can hold it
        json.dumps(data, ensure_ascii=False).encode("utf8")
    except UnicodeEncodeError as err:
        reason = f"a lone surrogate {err.object[err.start]!r} (JSON escape) is not a character."
        raise RecordError(path, number, reason) from None
    return Record(number, data["text"], data)


class RecordReader:
    """Streams the records after line `after_line`; bad ones go to `on_error` (which may raise
    RecordError to stop). A stop, or an input that ends inside a gzip stream, ends the stream
    normally and is kept in `error`, so the records read before it are still annotated."""

    def __init__(
        self,
        path: Path,
        file_format: str,
        *,
        after_line: int = 0,
        on_error: Callable[[RecordError], None],
        max_length: Optional[int] = None,
    ) -> None:
        self.path, self.file_format, self.on_error = Path(path), file_format, on_error
        self.after_line, self.max_length = after_line, max_length
        self.last_line = after_line  # every line up to here was read (and parsed or reported)
        self.error: Optional[ValueError] = None

    def __iter__(self) -> Iterator[Record]:
        with open_input(self.path) as f:
            number = 0
            while True:
                try:
                    raw = f.readline()
                except (EOFError, OSError, zlib.error) as err:
                    self.error = TruncatedInputError(
                        f"{self.path}:{number + 1}: the compressed input is truncated or corrupt "
                        f"({err}); lines 1-{number} were read and annotated, the rest is lost. "
                        "Fix or re-download the file."
                    )
                    return
                if not raw:
                    return
                number += 1
                if number <= self.after_line:
                    continue
                try:
                    record = self._parse(number, raw)
                    if record is None:
                        self.last_line = number
                        continue
                except RecordError as err:
                    try:
                        self.on_error(err)
                    except RecordError as stop:
                        self.error = stop
                        return
                    self.last_line = number
                    continue
                self.last_line = number
                yield record

    def _parse(self, number: int, raw: bytes) -> Optional[Record]:
        record = parse_line(self.path, number, raw, self.file_format)
        if record is not None and self.max_length:
            check_length(self.path, record, self.max_length)
        return record


def check_length(path: Path, record: Record, max_length: int) -> None:
    """RecordError for a text the pipeline would refuse (spaCy's E088), before it is piped."""
    if len(record.text) > max_length:
        raise RecordError(
            path,
            record.line,
            f"the text has {len(record.text):,} characters, over the pipeline's nlp.max_length "
            f"({max_length:,}, spaCy's E088); split it into smaller records, or raise "
            "nlp.max_length if the memory allows.",
        )


def pipeline_failure(path: Path, record: Record, err: Exception) -> RecordError:
    """The RecordError for a record the pipeline raised on, naming the exception."""
    reason = (str(err).strip().splitlines() or [""])[0]
    message = f"the pipeline failed on this record ({type(err).__name__}: {reason})."
    return RecordError(path, record.line, message)


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


PROGRESS_VERSION = 2
HEAD_BYTES = 1 << 16  # the input's first bytes, hashed into the progress record


def input_identity(path: Path) -> Dict[str, Any]:
    """What the progress record remembers of the input: path, size and a hash of its start."""
    with open(path, "rb") as f:
        head = hashlib.sha256(f.read(HEAD_BYTES)).hexdigest()
    return {"path": str(Path(path).resolve()), "size": os.path.getsize(path), "head": head}


def check_paths(input_path: Path, output_path: Path) -> None:
    """Refuse an output that is the input (or its progress record): writing would empty it."""
    output_path, input_path = Path(output_path), Path(input_path)
    progress = output_path.with_name(output_path.name + ".progress")
    for target in (output_path, progress):
        same = (
            os.path.samefile(input_path, target)
            if target.exists()
            else input_path.resolve() == target.resolve()
        )
        if same:
            raise AnnotateError(
                f"{target} is the input file {input_path}: writing it would destroy the input. "
                "Choose another output path."
            )


class ResumableWriter:
    """Appends JSONL lines and, after each flushed chunk, records in OUTPUT.progress the output
    size and the last input line it covers, with the input's identity. A new run refuses an
    existing output unless `overwrite`; `resume` checks that the progress record belongs to this
    input and this output, then truncates the output to the recorded size, so a chunk written but
    not recorded is written again, never twice."""

    def __init__(
        self,
        path: Path,
        resume: bool,
        *,
        input_path: Optional[Path] = None,
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path)
        self.progress_path = self.path.with_name(self.path.name + ".progress")
        self.input = input_identity(input_path) if input_path is not None else None
        if resume and overwrite:
            raise AnnotateError(
                "--resume continues the output and --overwrite replaces it: pass only one."
            )
        self.after_line, self.overwrite = 0, overwrite
        offset = self._resume_offset() if resume else self._check_new()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Appends only under --resume (after the checks above); otherwise a new, empty file.
        self.file = open(self.path, "r+b" if offset else "wb")  # noqa: SIM115 (closed by close())
        self.file.truncate(offset)
        self.file.seek(offset)
        self._record(self.after_line)

    def _check_new(self) -> int:
        if self.path.exists() and self.path.stat().st_size and not self.overwrite:
            raise AnnotateError(
                f"{self.path} already exists ({self.path.stat().st_size:,} bytes). Pass --resume "
                "to continue the run that wrote it, --overwrite to replace it, or choose "
                "another output path."
            )
        return 0

    def _resume_offset(self) -> int:
        """The output size the progress record vouches for, after checking it still holds."""
        where = f"{self.progress_path}"
        again = "pass --overwrite instead of --resume to annotate from the start"
        if not self.progress_path.exists():
            if self.path.exists() and self.path.stat().st_size:
                raise AnnotateError(
                    f"{self.path} exists but has no progress record ({where}), so how much of it "
                    f"is complete is unknown: {again}."
                )
            return 0  # nothing to resume: a fresh start
        try:
            progress = json.loads(self.progress_path.read_text(encoding="utf8"))
            line, offset = int(progress["line"]), int(progress["offset"])
            recorded_input = progress.get("input")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
            raise AnnotateError(
                f"{where}: not a readable progress record ({err}); {again}."
            ) from None
        if not self.path.exists():
            raise AnnotateError(
                f"{where} vouches for {offset:,} bytes of {self.path}, but the output is missing "
                f"(deleted or moved?). Restore it, or {again}."
            )
        size = self.path.stat().st_size
        if size < offset:
            raise AnnotateError(
                f"{self.path} has {size:,} bytes but {where} vouches for {offset:,}: the output "
                f"was truncated or replaced since, so resuming would lose records; {again}."
            )
        if self.input is not None and recorded_input is not None:
            if (recorded_input["size"], recorded_input["head"]) != (
                self.input["size"],
                self.input["head"],
            ):
                raise AnnotateError(
                    f"{where} was written for the input {recorded_input['path']} "
                    f"({recorded_input['size']:,} bytes), but {self.input['path']} "
                    f"({self.input['size']:,} bytes) differs from it. Resume with the same input "
                    f"file, or {again}."
                )
        elif self.input is not None:
            raise AnnotateError(
                f"{where} does not name its input file (an older version); {again}."
            )
        self.after_line = line
        return offset

    def _record(self, last_line: int) -> None:
        tmp = self.progress_path.with_name(self.progress_path.name + ".tmp")
        record = {
            "version": PROGRESS_VERSION,
            "line": last_line,
            "offset": self.file.tell(),
            "input": self.input,
        }
        tmp.write_text(json.dumps(record), encoding="utf8")
        os.replace(tmp, self.progress_path)

    def write(self, lines: List[str], last_line: int) -> None:
        self.file.write("".join(lines).encode("utf8"))
        self.file.flush()
        os.fsync(self.file.fileno())
        self._record(last_line)

    def close(self) -> None:
        self.file.close()


def pipeline_spans_key(nlp: Language) -> Optional[str]:
    """The `spans_key` of the pipeline's bert_ner component (where its entity scores are), or
    None for a pipeline without one."""
    return next((pipe.spans_key for _, pipe in nlp.pipeline if isinstance(pipe, BertNER)), None)


@contextlib.contextmanager
def worker_threads(n_process: int) -> Iterator[None]:
    """Torch threads of `nlp.pipe`'s worker processes. A forked child whose parent already used
    OpenMP (GNU libgomp) hangs forever in its first multi-threaded torch operation, so forked
    workers run one thread each; spawned workers import torch afresh and read OMP_NUM_THREADS,
    set here to share the cores between them."""
    global _FORK_THREADS
    if n_process <= 1:
        yield
        return
    threads = str(max(1, (os.cpu_count() or 1) // n_process))
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = saved or threads
    _FORK_THREADS = 1
    try:
        yield
    finally:
        _FORK_THREADS = None
        if saved is None:
            del os.environ["OMP_NUM_THREADS"]


_FORK_THREADS: Optional[int] = None


def _set_threads_after_fork() -> None:
    if _FORK_THREADS is not None:
        import torch

        torch.set_num_threads(_FORK_THREADS)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_set_threads_after_fork)


def check_settings(batch_size: Optional[int], n_process: int, on_error: str) -> None:
    """Refuse settings that would do nothing or fail late, with a one-line reason."""
    if on_error not in ON_ERROR:
        raise AnnotateError(f"Unknown on_error {on_error!r}: use one of {', '.join(ON_ERROR)}.")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise AnnotateError(f"--batch-size must be a positive number of docs, not {batch_size}.")
    if not isinstance(n_process, int) or n_process < 1:
        raise AnnotateError(f"--n-process must be 1 or more worker processes, not {n_process}.")


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
    overwrite: bool = False,
    progress: Optional[Callable[[int], None]] = None,
    spans_key: Optional[str] = None,
) -> AnnotateStats:
    """Annotate every record of `input_path` into `output_path` (JSONL with "entities"): one
    output line per good input record, exactly once, in input order.

    batch_size (Optional[int]): Docs per `nlp.pipe` batch (and per output chunk); None uses the
        pipeline's `nlp.batch_size`. The transformer sorts each batch by length and encodes it in
        sub-batches of similar length, so large batches mean little padding.
    n_process (int): Worker processes of `nlp.pipe` (fork or spawn start method).
    on_error (str): "stop" writes everything before the first bad record, then raises
        RecordError; "skip" counts bad records (unreadable, invalid JSON, no "text", lone
        surrogates, over nlp.max_length, or records the pipeline fails on) in the returned stats
        and goes on.
    resume (bool): Continue an interrupted run from its OUTPUT.progress file (checked against the
        input and the output).
    overwrite (bool): Replace an existing output; without it (or `resume`) one is refused.
    progress (Optional[Callable[[int], None]]): Called with the number of docs done each chunk.
    spans_key (Optional[str]): Where the entity scores are; None reads the bert_ner component's.
    """
    check_settings(batch_size, n_process, on_error)
    check_paths(input_path, output_path)
    spans_key = spans_key or pipeline_spans_key(nlp) or "bert_ner"
    stats = AnnotateStats()

    def handle(err: RecordError) -> None:
        if on_error == "stop":
            raise err
        stats.skipped.append(err)

    writer = ResumableWriter(output_path, resume, input_path=input_path, overwrite=overwrite)
    stats.resumed_after_line = writer.after_line
    reader = RecordReader(
        input_path,
        input_format(input_path, file_format),
        after_line=writer.after_line,
        on_error=handle,
        max_length=nlp.max_length,
    )
    chunk = batch_size or nlp.batch_size
    lines: List[str] = []
    last_line = writer.after_line

    def emit(doc: Doc, record: Record) -> None:
        nonlocal last_line
        lines.append(annotated_line(doc, record, spans_key))
        stats.docs += 1
        stats.entities += len(doc.ents)
        last_line = record.line
        if len(lines) >= chunk:
            flush()

    def flush() -> None:
        writer.write(lines, last_line)
        if progress is not None and lines:
            progress(len(lines))
        lines.clear()

    error: Optional[ValueError] = None
    try:
        try:
            with worker_threads(n_process):
                _pipe_records(nlp, input_path, iter(reader), emit, handle, batch_size, n_process)
            last_line = max(last_line, reader.last_line)
            error = reader.error
        except RecordError as err:  # stop: the pipeline failed on this record
            error = err
        flush()  # everything before the error (if any) is written and recorded
    finally:
        writer.close()
    stats.skipped.sort(key=lambda err: err.line)
    if error is not None:
        raise error
    return stats


def _pipe_records(
    nlp: Language,
    path: Path,
    records: Iterator[Record],
    emit: Callable[[Doc, Record], None],
    handle: Callable[[RecordError], None],
    batch_size: Optional[int],
    n_process: int,
) -> None:
    """Run `nlp.pipe` over the records, emitting each doc in input order. If the pipeline fails
    on a batch, its records are retried one by one: the ones that fail go to `handle` (as
    RecordErrors naming their line), the others are emitted, and a new `nlp.pipe` goes on with
    the rest."""
    pending: Deque[Record] = deque()  # handed to nlp.pipe, not yet emitted
    read_errors: List[BaseException] = []  # raised by the input, not by the pipeline

    def feed() -> Iterator[Tuple[str, Record]]:
        try:
            for record in records:
                pending.append(record)
                yield record.text, record
        except Exception as err:
            read_errors.append(err)
            raise

    while True:
        stream = nlp.pipe(feed(), as_tuples=True, batch_size=batch_size, n_process=n_process)
        while True:
            try:
                doc, record = next(stream)
            except StopIteration:
                return
            except Exception:
                if read_errors:
                    raise read_errors[0] from None
                break  # the pipeline failed on some record of the batch
            pending.popleft()
            emit(doc, record)
        failed = list(pending)
        pending.clear()
        for record in failed:
            try:
                doc = nlp(record.text)
            except Exception as err:
                handle(pipeline_failure(path, record, err))
                continue
            emit(doc, record)
