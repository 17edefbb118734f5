"""The local annotate engine: `nlp.pipe` in this process (or its worker processes) over a text or
JSONL file, streamed, resumable, nothing lost silently. Reading records and writing output are
shared with the Ray engine (`ray_engine`) in `records`, where the guarantees are spelled out.
"""

import contextlib
import os
from collections import deque
from pathlib import Path
from typing import Callable, Deque, Iterator, List, Optional, Tuple

from spacy.language import Language
from spacy.tokens import Doc

from .records import (
    AnnotatedOutput,
    AnnotateOptions,
    AnnotateStats,
    Record,
    RecordError,
    RecordReader,
    annotated,
    check_paths,
    input_format,
    open_writer,
    pipe_one_by_one,
    pipeline_spans_key,
)
from .runtime import load_pipeline


def annotate(
    nlp: Language,
    input_path: Path,
    output_path: Path,
    options: AnnotateOptions = AnnotateOptions(),
    *,
    progress: Optional[Callable[[int], None]] = None,
    spans_key: Optional[str] = None,
) -> AnnotateStats:
    """Annotate every record of `input_path` into `output_path` (JSONL with "entities"): one
    output line per good input record, exactly once, in input order.

    options (AnnotateOptions): The run's settings (see there); those of the Ray engine are refused.
    progress (Optional[Callable[[int], None]]): Called with the number of docs done each chunk.
    spans_key (Optional[str]): Where the entity scores are; None reads the bert_ner component's.
    """
    options.check("local")
    spans_key = spans_key or pipeline_spans_key(nlp) or "bert_ner"
    writer = open_writer(input_path, output_path, options)
    output = AnnotatedOutput(
        writer,
        chunk_size=options.batch_size or nlp.batch_size,
        on_error=options.on_error,
        progress=progress,
    )
    reader = RecordReader(
        input_path,
        input_format(input_path, options.file_format),
        after_line=writer.resumed_after_line,
        on_error=output.reject,
        max_length=nlp.max_length,
    )

    def emit(doc: Doc, record: Record) -> None:
        output.add(annotated(doc, record, spans_key), len(doc.ents))

    def produce() -> Tuple[int, Optional[ValueError]]:
        with worker_threads(options.n_process):
            _pipe_records(
                nlp,
                input_path,
                iter(reader),
                emit,
                output.reject,
                options.batch_size,
                options.n_process,
            )
        return reader.last_line, reader.error

    return output.run(produce)


def annotate_model(
    model: str,
    input_path: Path,
    output_path: Path,
    options: AnnotateOptions = AnnotateOptions(),
    *,
    progress: Optional[Callable[[int], None]] = None,
) -> AnnotateStats:
    """`annotate` with the pipeline `model` (a package name or directory) loaded on the options'
    GPU: what `python -m spacy_bert_ner annotate` runs. Options and paths are checked before the
    pipeline is loaded, so a mistake costs no loading time."""
    options.check("local")
    check_paths(input_path, output_path)
    nlp = load_pipeline(model, quantized=options.quantized, gpu_id=options.gpu_id)
    return annotate(nlp, input_path, output_path, options, progress=progress)


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
        for record, result in pipe_one_by_one(nlp, path, failed):
            if isinstance(result, RecordError):
                handle(result)
            else:
                emit(result, record)


@contextlib.contextmanager
def worker_threads(n_process: int) -> Iterator[None]:
    """Torch threads of `nlp.pipe`'s worker processes: spawned workers import torch afresh and
    read OMP_NUM_THREADS, set here to share the cores between them (forked ones run one thread
    each: `inference._after_fork_in_child`)."""
    if n_process <= 1:
        yield
        return
    threads = str(max(1, (os.cpu_count() or 1) // n_process))
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = saved or threads
    try:
        yield
    finally:
        if saved is None:
            del os.environ["OMP_NUM_THREADS"]
