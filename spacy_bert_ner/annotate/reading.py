"""Reading annotate's input: plain text (one doc per line) or JSONL with a "text" field (other
fields are kept), optionally gzipped, from a regular file or a stream (a pipe, FIFO, /dev/stdin),
as Records; bad lines as RecordErrors naming their file and line. Shared by both engines."""

import errno
import gzip
import io
import json
import math
import os
import stat
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, Iterable, Iterator, Optional, Tuple, Union, cast

from spacy.language import Language
from spacy.tokens import Doc

from .options import OUTPUT_FIELDS, AnnotateError, RecordError, TruncatedInputError


@dataclass
class Record:
    line: int
    text: str
    data: Dict[str, Any]  # the output record, without "entities" yet


def input_format(path: Path, file_format: str = "auto") -> str:
    """'jsonl' for .jsonl/.json(.gz) files, 'text' otherwise, unless given."""
    if file_format != "auto":
        return file_format
    suffixes = [s.lower() for s in Path(path).suffixes if s.lower() != ".gz"]
    return "jsonl" if suffixes and suffixes[-1] in (".jsonl", ".json") else "text"


def is_stream(path: Path) -> bool:
    """Whether `path` is something other than a regular file (a pipe, a FIFO, `/dev/stdin`, a
    process substitution, a device): it is read once, front to back, and cannot be resumed."""
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def os_error(path: Path, err: OSError, doing: str, advice: str = "") -> "AnnotateError":
    """An OSError as one line naming the path: what could not be done, and the OS's reason."""
    reason = err.strerror or str(err) or type(err).__name__
    return AnnotateError(f"{path}: cannot {doing} ({reason}){'; ' + advice if advice else ''}.")


def check_input(path: Path, resume: bool = False) -> None:
    """Refuse, in one line, an input that cannot be read (missing, a directory, no permission),
    and `--resume` of a stream: it cannot be read again from where the run stopped. A regular
    file is opened once to check it; a stream is not touched (its data would be lost)."""
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if stat.S_ISREG(mode):
            with open(path, "rb"):
                pass
    except OSError as err:
        raise os_error(path, err, "read the input") from None
    if resume and not stat.S_ISREG(mode):
        raise AnnotateError(
            f"{path}: --resume needs the input as a regular file, and this is a stream (a pipe, "
            "FIFO or device) that cannot be read again from where the run stopped. Save it to a "
            "file and annotate that, or run without --resume."
        )


class _Prefixed(io.RawIOBase):
    """A stream's first bytes (read to recognise gzip) put back in front of the rest of it."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self.head, self.rest = head, rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.head:
            n = min(len(buffer), len(self.head))
            buffer[:n], self.head = self.head[:n], self.head[n:]
            return n
        data = self.rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.rest.close()
        super().close()


def open_input(path: Path) -> BinaryIO:
    """The file's bytes, decompressed if it is gzip (recognised by its magic number). The file is
    opened once, so a pipe or FIFO is read whole, from its first byte."""
    try:
        raw = open(path, "rb", buffering=0)  # noqa: SIM115 (closed with the returned stream)
    except OSError as err:
        raise os_error(path, err, "read the input") from None
    magic = b""
    while len(magic) < 2:
        more = raw.read(2 - len(magic))
        if not more:
            break
        magic += more
    stream = io.BufferedReader(_Prefixed(magic, cast(BinaryIO, raw)), 1 << 16)
    if magic == b"\x1f\x8b":
        return cast(BinaryIO, gzip.GzipFile(fileobj=stream, mode="rb"))
    return cast(BinaryIO, stream)


class _NotStrictJSON(ValueError):
    """A value Python's JSON accepts but RFC 8259 does not (NaN, Infinity, a number over 1e308)."""


def _refuse_constant(name: str) -> Any:
    raise _NotStrictJSON(f"{name} is not a JSON value (RFC 8259)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotStrictJSON(
            f"the number {text[:30]} is out of range (it would be written as "
            f"{'-' if value < 0 else ''}Infinity, which is not JSON)"
        )
    return value


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number")


def _excerpt(text: str, at: int) -> str:
    """A few characters of `text` from `at`, invisible ones escaped (repr shows NBSP as \\xa0)."""
    return repr(text[at : at + 20])


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
        data = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except json.JSONDecodeError as err:
        where = f"column {err.colno}, at {_excerpt(text, err.pos)}"
        raise RecordError(path, number, f"invalid JSON: {err.msg} ({where}).") from None
    except RecursionError:
        raise RecordError(
            path, number, "invalid JSON: nested too deeply for Python's JSON parser."
        ) from None
    except ValueError as err:  # _NotStrictJSON, or an integer of over 4,300 digits
        raise RecordError(path, number, f"invalid JSON: {err}.") from None
    if not isinstance(data, dict) or not isinstance(data.get("text"), str):
        got = (
            f'"text" is {_json_type(data["text"])}'
            if isinstance(data, dict) and "text" in data
            else ('no "text" field' if isinstance(data, dict) else _json_type(data))
        )
        raise RecordError(
            path, number, f'expected a JSON object with a string "text" field (got {got}).'
        )
    for name in OUTPUT_FIELDS:
        if name in data:
            raise RecordError(
                path,
                number,
                f'the record already has an "{name}" field, which annotate writes: rename it '
                f'(e.g. "input_{name}") or drop it.',
            )
    try:  # a JSON-escaped lone surrogate ("\\ud800") decodes, but no UTF-8 output can hold it
        json.dumps(data, ensure_ascii=False).encode("utf8")
    except UnicodeEncodeError as err:
        reason = f"a lone surrogate {err.object[err.start]!r} (JSON escape) is not a character."
        raise RecordError(path, number, reason) from None
    return Record(number, data["text"], data)


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


def read_record(
    path: Path, number: int, raw: bytes, file_format: str, max_length: Optional[int]
) -> Optional[Record]:
    """`parse_line`, and a RecordError for a text over the pipeline's `max_length` too: every
    check a record passes before it reaches the pipeline, in either engine."""
    record = parse_line(path, number, raw, file_format)
    if record is not None and max_length:
        check_length(path, record, max_length)
    return record


def read_error(path: Path, lines_read: int, err: BaseException) -> AnnotateError:
    """The error that ended reading after `lines_read` lines: a truncated or corrupt gzip stream
    (TruncatedInputError), or the OS refusing to read on."""
    where = f"{path}:{lines_read + 1}"
    done = f"lines 1-{lines_read} were read and annotated, the rest is lost"
    if isinstance(err, (EOFError, zlib.error, gzip.BadGzipFile)):
        return TruncatedInputError(
            f"{where}: the compressed input is truncated or corrupt ({err}); {done}. "
            "Fix or re-download the file."
        )
    reason = getattr(err, "strerror", None) or str(err)
    return AnnotateError(f"{where}: cannot read the input ({reason}); {done}.")


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
                    self.error = read_error(self.path, number, err)
                    return
                if not raw:
                    return
                number += 1
                if number <= self.after_line:
                    continue
                try:
                    record = read_record(self.path, number, raw, self.file_format, self.max_length)
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


def pipeline_failure(path: Path, record: Record, err: Exception) -> RecordError:
    """The RecordError for a record the pipeline raised on, naming the exception."""
    reason = (str(err).strip().splitlines() or [""])[0]
    message = f"the pipeline failed on this record ({type(err).__name__}: {reason})."
    return RecordError(path, record.line, message)


def pipe_one_by_one(
    nlp: Language, path: Path, records: Iterable[Record]
) -> Iterator[Tuple[Record, Union[Doc, RecordError]]]:
    """Each record's doc, or the RecordError of the pipeline's failure on it: how both engines
    redo a batch the pipeline failed on, so that a bad record costs only itself."""
    for record in records:
        try:
            yield record, nlp(record.text)
        except Exception as err:
            yield record, pipeline_failure(path, record, err)
