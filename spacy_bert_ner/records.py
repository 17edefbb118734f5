"""Annotate's records and I/O, shared by its two engines (`annotate` runs `nlp.pipe` in this
process, `ray_engine` on a Ray actor pool): the run's options, reading input records, turning docs
into output records, and writing them, resumably, through one writer interface.

Input is plain text (one doc per line) or JSONL with a "text" field (other fields are kept), either
optionally gzipped. Output is JSONL (or Parquet on Ray), one line per good input record, with its
entities. A small `OUTPUT.progress` file records how far a JSONL output is complete, so an
interrupted run resumes exactly where it stopped, without duplicating or losing records.
"""

import abc
import gzip
import hashlib
import json
import os
import zlib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import (
    Any,
    BinaryIO,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Union,
    cast,
)

from spacy.language import Language
from spacy.tokens import Doc

from .pipeline_component import BertNER

ENGINES = ("local", "ray")
INPUT_FORMATS = ("auto", "text", "jsonl")
OUTPUT_FORMATS = ("jsonl", "parquet")
ON_ERROR = ("stop", "skip")


class AnnotateError(ValueError):
    """A run that cannot start or go on safely (the options, the output, its progress record, the
    input); the message says what to do."""


class TruncatedInputError(AnnotateError):
    """The input ended inside a compressed stream; everything decoded before was annotated."""


class RecordError(ValueError):
    """A bad input record, located by file and line."""

    def __init__(self, path: Path, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: {reason}")
        self.path, self.line, self.reason = path, line, reason


def _engine_option(default: Any, engine: str, flag: str) -> Any:
    """A field only `engine` uses, with the command-line flag that sets it (for messages)."""
    return field(default=default, metadata={"engine": engine, "flag": flag})


@dataclass(frozen=True)
class AnnotateOptions:
    """The settings of an annotate run. The first ones apply to both engines; each engine's own
    are declared with the engine and the flag that sets them, so that `check` refuses, in this one
    place, an option the chosen engine would otherwise ignore silently.

    file_format (str): "auto" (JSONL for .jsonl/.json(.gz), else text), "text" or "jsonl".
    batch_size (Optional[int]): Docs per `nlp.pipe` batch (and per output chunk); None uses the
        pipeline's `nlp.batch_size` locally, `RAY_BATCH_SIZE` on Ray. The transformer sorts each
        batch by length and encodes it in sub-batches of similar length, so large batches mean
        little padding.
    on_error (str): "stop" writes everything before the first bad record, then raises
        RecordError; "skip" counts bad records (unreadable, invalid JSON, no "text", lone
        surrogates, over nlp.max_length, or records the pipeline fails on) in the returned stats
        and goes on.
    resume (bool): Continue an interrupted run from its OUTPUT.progress file (checked against the
        input and the output).
    overwrite (bool): Replace an existing output; without it (or `resume`) one is refused.
    quantized (bool): int8 encoder, for CPU inference only.
    gpu_id (int): Local: the GPU to run on, -1 for the CPU.
    n_process (int): Local: worker processes of `nlp.pipe` (fork or spawn start method).
    address (Optional[str]): Ray: the cluster to connect to ("auto", "ray://host:10001"); None
        starts or reuses a local one.
    num_actors (int): Ray: pipeline actors.
    cpus_per_actor (float): Ray: CPUs reserved for each actor; the reading task needs one more
        CPU besides all actors, or the run cannot start.
    gpus_per_actor (float): Ray: GPUs for each actor.
    output_format (str): Ray: "jsonl" (resumable) or "parquet".
    """

    file_format: str = "auto"
    batch_size: Optional[int] = None
    on_error: str = "stop"
    resume: bool = False
    overwrite: bool = False
    quantized: bool = False
    gpu_id: int = _engine_option(-1, "local", "--gpu-id")
    n_process: int = _engine_option(1, "local", "--n-process")
    address: Optional[str] = _engine_option(None, "ray", "--ray-address")
    num_actors: int = _engine_option(2, "ray", "--num-actors")
    cpus_per_actor: float = _engine_option(1.0, "ray", "--cpus-per-actor")
    gpus_per_actor: float = _engine_option(0.0, "ray", "--gpus-per-actor")
    output_format: str = _engine_option("jsonl", "ray", "--output-format")

    def check(self, engine: str) -> None:
        """Refuse settings that would do nothing or fail late, with a one-line reason, before
        anything is loaded or written."""
        for name, value, choices in (
            ("engine", engine, ENGINES),
            ("--format", self.file_format, INPUT_FORMATS),
            ("--on-error", self.on_error, ON_ERROR),
            ("--output-format", self.output_format, OUTPUT_FORMATS),
        ):
            if value not in choices:
                raise AnnotateError(f"Unknown {name} {value!r}: use one of {', '.join(choices)}.")
        ignored = [
            f.metadata["flag"]
            for f in fields(self)
            if f.metadata.get("engine", engine) != engine and getattr(self, f.name) != f.default
        ]
        if ignored:
            other = next(e for e in ENGINES if e != engine)
            raise AnnotateError(
                f"{', '.join(ignored)} only {'applies' if len(ignored) == 1 else 'apply'} to "
                f"--engine {other}, not --engine {engine}: "
                "drop them or change the engine."
            )
        if self.quantized and (self.gpu_id >= 0 or self.gpus_per_actor > 0):
            raise AnnotateError(
                "--quantize is for CPU inference (int8 on the CPU): drop it or the GPU."
            )
        if self.batch_size is not None and (
            not isinstance(self.batch_size, int) or self.batch_size < 1
        ):
            raise AnnotateError(
                f"--batch-size must be a positive number of docs, not {self.batch_size}."
            )
        if not isinstance(self.n_process, int) or self.n_process < 1:
            raise AnnotateError(
                f"--n-process must be 1 or more worker processes, not {self.n_process}."
            )
        if self.resume and self.overwrite:
            raise AnnotateError(
                "--resume continues the output and --overwrite replaces it: pass only one."
            )
        if self.output_format == "parquet" and self.resume:
            raise AnnotateError("--resume needs JSONL output: Parquet files cannot be appended to.")
        if self.num_actors < 1 or self.cpus_per_actor <= 0 or self.gpus_per_actor < 0:
            raise AnnotateError(
                "--num-actors must be 1 or more, --cpus-per-actor above 0 and --gpus-per-actor 0 "
                f"or more (got {self.num_actors}, {self.cpus_per_actor:g}, "
                f"{self.gpus_per_actor:g})."
            )


@dataclass
class AnnotateStats:
    """What a run did. `redelivered` and `restarted_lines` are the Ray engine's evidence that a
    worker died and its work was redone (and are 0 locally)."""

    docs: int = 0
    entities: int = 0
    skipped: List[RecordError] = field(default_factory=list)
    resumed_after_line: int = 0
    # Rows Ray delivered again after re-running a batch, dropped because they were written.
    redelivered: int = 0
    # Input lines annotated by an actor that Ray restarted after its process died.
    restarted_lines: int = 0


# --- Reading records ----------------------------------------------------------------------------


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


# --- Output lines -------------------------------------------------------------------------------


def pipeline_spans_key(nlp: Language) -> Optional[str]:
    """The `spans_key` of the pipeline's bert_ner component (where its entity scores are), or
    None for a pipeline without one."""
    return next((pipe.spans_key for _, pipe in nlp.pipeline if isinstance(pipe, BertNER)), None)


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


class Annotated(NamedTuple):
    """One output record: its input line and its JSON (the input's fields plus "entities")."""

    line: int
    json: str


def annotated(doc: Doc, record: Record, spans_key: str = "bert_ner") -> Annotated:
    """The output record of one input record and its doc."""
    output = {**record.data, "entities": doc_entities(doc, spans_key)}
    return Annotated(record.line, json.dumps(output, ensure_ascii=False))


# --- Writing output -----------------------------------------------------------------------------


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
    again, never twice."""

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
        self.resumed_after_line, self.overwrite = 0, overwrite
        offset = self._resume_offset() if resume else self._check_new()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Appends only under --resume (after the checks above); otherwise a new, empty file.
        self.file = open(self.path, "r+b" if offset else "wb")  # noqa: SIM115 (closed by close())
        self.file.truncate(offset)
        self.file.seek(offset)
        self._record(self.resumed_after_line)

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
        self.resumed_after_line = line
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

    def write(self, chunk: Sequence[Annotated], through_line: int) -> None:
        self.file.write("".join(output.json + "\n" for output in chunk).encode("utf8"))
        self.file.flush()
        os.fsync(self.file.fileno())
        self._record(through_line)

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
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.writer = pyarrow.parquet.ParquetWriter(str(path), self.schema)

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
        if rows:
            self.writer.write_table(self.pyarrow.Table.from_pylist(rows, schema=self.schema))

    def close(self) -> None:
        self.writer.close()


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
