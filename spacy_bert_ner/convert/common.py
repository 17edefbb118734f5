"""What every reader of annotated data shares: the error that names the file and line, the
conversion's statistics, label checks, invisible characters named, and reading lines (gzip,
pipes, encodings)."""

import gzip
import os
import shutil
import stat
import tempfile
import unicodedata
import zlib
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Dict, Iterator, List, Optional, Tuple, Union

from spacy.tokens import Doc


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
    # Doubtful but valid data, each with the file and line to look at (labels differing in case).
    warnings: List[str] = field(default_factory=list)
    scheme: str = ""
    # False when a CoNLL file has no -DOCSTART- lines, so each sentence became its own doc.
    grouped: bool = True
    # The .spacy files written (one, or a directory's shards).
    files: int = 0
    # Every label seen, by its lower case: each spelling and where it was first seen.
    labels: Dict[str, Dict[str, str]] = field(default_factory=dict, repr=False)

    def add_doc(self, doc: Doc) -> None:
        self.docs += 1
        self.sentences += sum(1 for _ in doc.sents) if doc.has_annotation("SENT_START") else 1
        self.tokens += len(doc)
        self.entities.update(ent.label_ for ent in doc.ents)


def check_label(path: Path, line: int, label: str, stats: ConversionStats) -> None:
    """Refuse the label O (it marks tokens outside entities, so it cannot be an entity type) and
    labels with invisible characters, and warn once about labels that differ only in case (`PER`
    and `per`), which train as two types."""
    spellings = stats.labels.setdefault(label.lower(), {})
    if label in spellings:
        return
    if not label.isprintable():
        raise ConversionError(
            path,
            line,
            f"the entity label {label!r} has a character nobody sees"
            f"{describe_invisible(label)}; it would be another entity type than the label "
            "without it. Remove the character.",
        )
    if label == "O":
        raise ConversionError(
            path,
            line,
            "the entity label 'O' is not an entity type: O marks the tokens outside entities. "
            "Remove the entity or give it its type.",
        )
    if spellings:
        spelling, where = next(iter(spellings.items()))
        stats.warnings.append(
            f"{path}:{line}: the label {label!r} differs from {spelling!r} (first at {where}) "
            "only in case; they are trained as two entity types. Use one spelling if they are "
            "one type."
        )
    spellings[label] = f"{path}:{line}"


def describe_invisible(text: str) -> str:
    """A note naming the characters of `text` a reader cannot see (tabs at the end, no-break and
    other Unicode spaces, zero-width and control characters), or "" when there are none."""
    notes = []
    if text != text.rstrip():
        notes.append(f"it ends in {_char_name(text[len(text.rstrip()) :][0])}")
    for column, char in enumerate(text.rstrip(), start=1):
        if char not in " \t" and (char.isspace() or not char.isprintable()):
            notes.append(f"{_char_name(char)} at column {column}")
            if len(notes) == 3:
                break
    if not notes:
        return ""
    return " (" + "; ".join(notes) + ")"


def _char_name(char: str) -> str:
    if char in "\t ":
        return "a tab" if char == "\t" else "a space"
    return f"U+{ord(char):04X} {unicodedata.name(char, 'control character')}"


@contextmanager
def readable(path: Path) -> Iterator[Path]:
    """`path` itself if it is a regular file; a pipe, FIFO or /dev/stdin copied to a temporary
    file first (in chunks), since a CoNLL file is read twice when it may lack -DOCSTART- lines."""
    try:
        regular = stat.S_ISREG(os.stat(path).st_mode)
    except OSError as err:
        raise _unreadable(path, err) from None
    if regular:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="spacy-bert-ner-convert-") as folder:
        copy = Path(folder) / "input"
        try:
            with open(path, "rb") as source, open(copy, "wb") as target:
                shutil.copyfileobj(source, target, 1 << 20)
        except OSError as err:
            raise _unreadable(path, err) from None
        yield copy


def _unreadable(path: Path, err: OSError) -> ConversionError:
    return ConversionError(path, None, f"cannot read the file ({err.strerror or err}).")


def read_lines(path: Path, source: Optional[Path] = None) -> Iterator[Tuple[int, str]]:
    """(1-based line number, text) of each line, read a line at a time, requiring UTF-8 and a
    non-empty file; gzipped files (recognised by their magic number) are decompressed, a UTF-8 byte
    order mark dropped. Lines end at \\n, \\r\\n or \\r. `source` is read in place of `path` (a
    copy of it); messages name `path`."""
    number, seen_text = 0, False
    try:
        with open(source or path, "rb") as raw_file:
            stream: Union[BinaryIO, gzip.GzipFile] = raw_file
            if raw_file.peek(2)[:2] == b"\x1f\x8b":
                stream = gzip.GzipFile(fileobj=raw_file, mode="rb")
            for chunk in stream:
                for raw in chunk.splitlines():
                    number += 1
                    if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                        raw = raw[3:]
                    seen_text = seen_text or bool(raw.strip())
                    try:
                        text = raw.decode("utf8")
                    except UnicodeDecodeError as err:
                        raise ConversionError(
                            path,
                            number,
                            f"not valid UTF-8 (byte {raw[err.start]:#04x} at column "
                            f"{err.start + 1}); re-encode the file as UTF-8, e.g. "
                            "`iconv -f latin1 -t utf8`.",
                        ) from None
                    yield number, text
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise ConversionError(
            path,
            None,
            f"the gzip file is truncated or corrupt after line {number} ({err}); fix or "
            "re-download it.",
        ) from None
    except OSError as err:
        raise _unreadable(path, err) from None
    if not seen_text:
        raise ConversionError(path, None, "the file is empty; expected annotated data.")
