"""The local annotate engine: `nlp.pipe` in this process (or its worker processes) over a text or
JSONL file, streamed, resumable, nothing lost silently. Reading records (`reading`) and writing
output (`outputs`, `writers`) are shared with the Ray engine (`ray_engine`); the guarantees are
spelled out in docs/annotate.md.
"""

import contextlib
import ctypes
import os
import signal
import sys
from collections import deque
from pathlib import Path
from typing import Callable, Deque, Iterator, List, Optional, Tuple

from spacy.language import Language
from spacy.tokens import Doc

from ..inference import load_pipeline
from .claim import OutputLock, check_paths
from .options import AnnotateOptions, AnnotateStats, RecordError
from .outputs import annotated, pipeline_spans_key
from .reading import Record, RecordReader, check_input, input_format, pipe_one_by_one
from .writers import AnnotatedOutput, open_writer


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
    with OutputLock(output_path):
        check_paths(input_path, output_path)
        check_input(input_path, options.resume)
        return _annotate(nlp, input_path, output_path, options, progress, spans_key)


def _annotate(
    nlp: Language,
    input_path: Path,
    output_path: Path,
    options: AnnotateOptions,
    progress: Optional[Callable[[int], None]],
    spans_key: Optional[str],
) -> AnnotateStats:
    """`annotate`, the output's lock held and the paths checked."""
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
        with worker_processes(options.n_process):
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
    GPU: what `python -m spacy_bert_ner annotate` runs. The output is claimed (`OutputLock`) and
    the options and paths are checked before the pipeline is loaded, so a mistake, or a second
    run on the same output, costs no loading time."""
    options.check("local")
    with OutputLock(output_path):
        check_paths(input_path, output_path)
        check_input(input_path, options.resume)
        nlp = load_pipeline(model, quantized=options.quantized, gpu_id=options.gpu_id)
        return _annotate(nlp, input_path, output_path, options, progress, None)


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


# The pid of the process running `nlp.pipe(..., n_process=N)` while it does (None otherwise):
# the children it forks then die with it (`_die_with_parent`).
_FORKING_PARENT: Optional[int] = None
_FORK_HOOK_INSTALLED = False
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _die_with_parent() -> None:
    """In a worker forked by `nlp.pipe` during an annotate run: ask Linux to kill it when the
    annotate process dies (`prctl(PR_SET_PDEATHSIG, SIGKILL)`), however that dies (`kill -9`
    included); without it, workers blocked on a pipe to a dead parent live forever. If the parent
    died before this ran, exit at once."""
    parent = _FORKING_PARENT
    if parent is None or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # no prctl: the check below still covers a dead parent
        pass
    if os.getppid() != parent:
        os._exit(1)


@contextlib.contextmanager
def worker_processes(n_process: int) -> Iterator[None]:
    """While `nlp.pipe` runs `n_process` > 1 worker processes: forked workers die with this
    process (`_die_with_parent`, installed here, by the code that forks, and active only during
    the run), and spawned workers, which import torch afresh and read OMP_NUM_THREADS, get their
    share of the cores (forked ones run one thread each: `FastTransformerModel.predict`)."""
    global _FORKING_PARENT, _FORK_HOOK_INSTALLED
    if n_process <= 1:
        yield
        return
    if not _FORK_HOOK_INSTALLED and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_die_with_parent)
        _FORK_HOOK_INSTALLED = True
    threads = str(max(1, (os.cpu_count() or 1) // n_process))
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = saved or threads
    _FORKING_PARENT = os.getpid()
    try:
        yield
    finally:
        _FORKING_PARENT = None
        if saved is None:
            del os.environ["OMP_NUM_THREADS"]
