"""Writing annotate's output, for both engines: the resumable JSONL writer (with its
OUTPUT.progress record, so an interrupted run resumes exactly where it stopped, without
duplicating or losing records) and the Parquet one, behind one interface; and `AnnotatedOutput`,
which takes an engine's results to the writer in input order."""

import abc
import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .claim import check_paths, companion
from .options import AnnotateError, AnnotateOptions, AnnotateStats, RecordError
from .outputs import Annotated
from .reading import is_stream, os_error

PROGRESS_VERSION = 3
HASH_CHUNK = 1 << 20


def input_identity(path: Path) -> Dict[str, Any]:
    """What the progress record remembers of the input: its path, and for a regular file its size
    and a hash of all its bytes (read in one streaming pass, far cheaper than annotating them), so
    that a resume notices any edit, wherever it is. A stream is only named: it cannot be resumed."""
    if is_stream(path):
        return {"path": str(path), "stream": True}
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(HASH_CHUNK):
                digest.update(chunk)
    except OSError as err:
        raise os_error(path, err, "read the input") from None
    return {
        "path": str(Path(path).resolve()),
        "size": os.path.getsize(path),
        "sha256": digest.hexdigest(),
    }


class OutputWriter(abc.ABC):
    """Where an engine writes its output: chunks of annotated records in input order. Both
    engines write through this interface, whatever the format.

    resumed_after_line (int): Input lines an earlier run already covered in this output, which
        the engine skips; 0 for a new output.
    """

    resumed_after_line: int

    @abc.abstractmethod
    def write(self, chunk: Sequence[Annotated], through_line: int) -> None:
        """Append `chunk`; with it, every input line up to `through_line` is written or was
        reported as bad, which is how far a resumable output can vouch that it is complete."""

    @abc.abstractmethod
    def close(self) -> None:
        """Finish the output (whatever the run's end)."""


class ResumableWriter(OutputWriter):
    """JSONL output. After each chunk, records in OUTPUT.progress the output size and the last
    input line it covers, with the input's identity. A new run refuses an existing output unless
    `overwrite`; `resume` checks that the progress record belongs to this input and this output,
    then truncates the output to the recorded size, so a chunk written but not recorded is written
    again, never twice. A write the OS refuses (a full disk) is cut back to the last recorded size,
    so no half line is left, and reported in one line. An output that is not a regular file (a
    device, a pipe) is written without a progress record, and cannot be resumed."""

    def __init__(
        self,
        path: Path,
        resume: bool,
        *,
        input_path: Optional[Path] = None,
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path)
        self.progress_path = companion(self.path, ".progress")
        self.stream = is_stream(self.path)
        if self.stream and resume:
            raise AnnotateError(
                f"{self.path}: --resume needs the output as a regular file, and this is a "
                "stream or device: choose a file as output."
            )
        self.input = input_identity(input_path) if input_path is not None else None
        self.resumed_after_line, self.overwrite = 0, overwrite
        offset = self._resume_offset() if resume else self._check_new()
        self.last_line = self.resumed_after_line
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Appends only under --resume (after the checks above); otherwise a new, empty file.
            mode = "r+b" if offset else "wb"
            self.file = open(self.path, mode, buffering=0)  # noqa: SIM115 (closed by close())
            if not self.stream:
                self.file.truncate(offset)
                self.file.seek(offset)
        except OSError as err:
            raise os_error(self.path, err, "write the output") from None
        self.offset = offset  # the size the progress record vouches for
        self._record(self.resumed_after_line)

    def _check_new(self) -> int:
        if self.stream:
            return 0
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
        except OSError as err:
            raise os_error(self.progress_path, err, "read the progress record") from None
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
        if self.input is not None:
            self._check_input(recorded_input, where, again)
        self.resumed_after_line = line
        return offset

    def _check_input(self, recorded: Any, where: str, again: str) -> None:
        """Refuse to resume unless the recorded input is this one: the same path and bytes."""
        assert self.input is not None
        if not isinstance(recorded, dict) or "sha256" not in recorded and "stream" not in recorded:
            raise AnnotateError(
                f"{where} does not identify its whole input (written by an older version); {again}."
            )
        if recorded.get("stream"):
            raise AnnotateError(
                f"{where} was written from the stream {recorded['path']}, which cannot be "
                f"read again from where it stopped; {again}."
            )
        if recorded.get("path") != self.input["path"]:
            raise AnnotateError(
                f"{where} was written for the input {recorded.get('path')}, not "
                f"{self.input['path']}. Resume with the same input file, or {again}."
            )
        if (recorded.get("size"), recorded.get("sha256")) != (
            self.input["size"],
            self.input["sha256"],
        ):
            raise AnnotateError(
                f"{where} was written for the input {recorded['path']} "
                f"({recorded.get('size', 0):,} bytes), but it differs from it now "
                f"({self.input['size']:,} bytes, another content hash): it was edited or "
                f"replaced since, so the output would mix old and new records; {again}."
            )

    def _record(self, last_line: int) -> None:
        if self.stream:
            return
        tmp = companion(self.progress_path, ".tmp")
        record = {
            "version": PROGRESS_VERSION,
            "line": last_line,
            "offset": self.offset,
            "input": self.input,
        }
        try:
            tmp.write_text(json.dumps(record), encoding="utf8")
            os.replace(tmp, self.progress_path)
        except OSError as err:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise os_error(self.progress_path, err, "write the progress record") from None

    def write(self, chunk: Sequence[Annotated], through_line: int) -> None:
        data = memoryview("".join(output.json + "\n" for output in chunk).encode("utf8"))
        try:
            while data:
                data = data[self.file.write(data) :]
            if not self.stream:
                os.fsync(self.file.fileno())
            if not self.stream:
                written, self.offset = self.offset, self.file.tell()
                try:
                    self._record(through_line)
                except AnnotateError:
                    self.offset = written
                    raise
        except (OSError, AnnotateError) as err:
            self._cut_back()
            advice = (
                f"every record through input line {self.last_line} is written; free space or "
                "fix the cause, then rerun with --resume"
                if not self.stream
                else ""
            )
            if isinstance(err, AnnotateError):
                raise AnnotateError(f"{str(err).rstrip('.')}; {advice}.") from None
            raise os_error(self.path, err, "write the output", advice) from None
        self.last_line = through_line

    def _cut_back(self) -> None:
        """Truncate the output to the size its progress record vouches for (a failed write
        leaves no half line behind; truncating needs no free space)."""
        if self.stream:
            return
        with contextlib.suppress(OSError):
            self.file.truncate(self.offset)

    def close(self) -> None:
        self.file.close()


class ParquetWriter(OutputWriter):
    """Parquet output: one row per record with its line, text, entities and full JSON record.
    A Parquet file cannot be appended to, so it always starts a new output and has no progress
    record to keep (`through_line` goes unused)."""

    def __init__(self, path: Path, overwrite: bool = False) -> None:
        import pyarrow
        import pyarrow.parquet

        if Path(path).exists() and not overwrite:
            raise AnnotateError(
                f"{path} already exists: pass --overwrite to replace it, or choose another path."
            )
        self.resumed_after_line = 0
        self.pyarrow = pyarrow
        entity = pyarrow.struct(
            [
                ("start", pyarrow.int64()),
                ("end", pyarrow.int64()),
                ("label", pyarrow.string()),
                ("text", pyarrow.string()),
                ("score", pyarrow.float64()),
            ]
        )
        self.schema = pyarrow.schema(
            [
                ("line", pyarrow.int64()),
                ("text", pyarrow.string()),
                ("entities", pyarrow.list_(entity)),
                ("record", pyarrow.string()),
            ]
        )
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pyarrow.parquet.ParquetWriter(str(path), self.schema)
        except OSError as err:
            raise os_error(self.path, err, "write the output") from None

    def write(self, chunk: Sequence[Annotated], through_line: int) -> None:
        rows = []
        for output in chunk:
            record = json.loads(output.json)
            rows.append(
                {
                    "line": output.line,
                    "text": record["text"],
                    "entities": record["entities"],
                    "record": output.json,
                }
            )
        try:
            if rows:
                self.writer.write_table(self.pyarrow.Table.from_pylist(rows, schema=self.schema))
        except OSError as err:
            raise os_error(self.path, err, "write the output") from None

    def close(self) -> None:
        try:
            self.writer.close()
        except OSError as err:
            raise os_error(self.path, err, "write the output") from None


def open_writer(input_path: Path, output_path: Path, options: AnnotateOptions) -> OutputWriter:
    """The writer of `options.output_format`, after checking the paths."""
    check_paths(input_path, output_path)
    if options.output_format == "parquet":
        return ParquetWriter(output_path, options.overwrite)
    return ResumableWriter(
        output_path, options.resume, input_path=input_path, overwrite=options.overwrite
    )


class AnnotatedOutput:
    """An engine's results on their way to the writer, in input order: annotated records are
    written in chunks of `chunk_size` (and `progress` hears of each chunk), bad records stop the
    run or are counted, as `on_error` says. One place for both engines, so they count, chunk and
    stop alike."""

    def __init__(
        self,
        writer: OutputWriter,
        *,
        chunk_size: int,
        on_error: str,
        progress: Optional[Callable[[int], None]] = None,
    ) -> None:
        self.writer, self.chunk_size, self.on_error = writer, chunk_size, on_error
        self.progress = progress
        self.stats = AnnotateStats(resumed_after_line=writer.resumed_after_line)
        # Every input line up to here is in `pending` or written: how far a chunk vouches.
        self.through_line = writer.resumed_after_line
        self.pending: List[Annotated] = []

    def add(self, output: Annotated, entities: int) -> None:
        self.pending.append(output)
        self.stats.docs += 1
        self.stats.entities += entities
        self.through_line = output.line
        if len(self.pending) >= self.chunk_size:
            self.flush()

    def reject(self, err: RecordError) -> None:
        """A bad record: raised under "stop", counted under "skip". It does not move
        `through_line`: the local engine reports a bad line while records before it may still be
        in `nlp.pipe`, so a resume reads it again (and rejects it again) rather than lose those."""
        if self.on_error == "stop":
            raise err
        self.stats.skipped.append(err)

    def flush(self, through_line: Optional[int] = None) -> None:
        """Write what is pending; `through_line` says the input was read that far (at the end)."""
        if through_line is not None:
            self.through_line = max(self.through_line, through_line)
        chunk, self.pending = self.pending, []
        self.writer.write(chunk, self.through_line)
        if self.progress is not None and chunk:
            self.progress(len(chunk))

    def run(self, produce: Callable[[], Tuple[int, Optional[ValueError]]]) -> AnnotateStats:
        """Run an engine's `produce`, which adds and rejects records and returns how far it read
        the input and the error that ended its reading early, if any; then write what is
        pending, close the writer and return the stats (skipped records in input order). A stop
        (RecordError) or a reading error is raised after everything before it is written."""
        error: Optional[ValueError] = None
        try:
            read_through: Optional[int] = None
            try:
                read_through, error = produce()
            except RecordError as err:  # stop: `reject` raised it, or the engine did
                error = err
            self.flush(read_through)  # everything before the error (if any) is written
        finally:
            self.writer.close()
        self.stats.skipped.sort(key=lambda err: err.line)
        if error is not None:
            raise error
        return self.stats
