"""An annotate run's options, its stats, and the errors it reports, shared by both engines."""

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, List, Optional

ENGINES = ("local", "ray")
INPUT_FORMATS = ("auto", "text", "jsonl")
OUTPUT_FORMATS = ("jsonl", "parquet")
ON_ERROR = ("stop", "skip")
# The fields annotate adds to each record; an input record that has one is refused.
OUTPUT_FIELDS = ("entities",)


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
