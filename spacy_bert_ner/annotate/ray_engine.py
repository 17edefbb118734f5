"""The Ray annotate engine: Ray Data reads the input and runs the pipeline on an actor pool.

Each actor loads the pipeline once and annotates whole batches; the driver receives the results in
input order (keyed by input line) and writes them through the same writer interface and output
stream as the local engine (`writers`), so the output is identical to a single-process run. A
batch that Ray re-executes after a worker dies may carry lines already written, which the driver
drops: nothing is lost or duplicated. Ray is an optional dependency, imported only here and only
when a run starts: `pip install "spacy-bert-ner[ray]"`.
"""

import json
import os
import threading
import zlib
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import numpy
from spacy.tokens import Doc

from ..inference import SetupError, load_pipeline
from .claim import OutputLock, check_paths
from .options import AnnotateError, AnnotateOptions, AnnotateStats, RecordError, TruncatedInputError
from .outputs import Annotated, annotated, pipeline_spans_key
from .reading import (
    Record,
    check_input,
    input_format,
    is_stream,
    open_input,
    pipe_one_by_one,
    read_error,
    read_record,
)
from .reaper import reaped_on_death
from .writers import AnnotatedOutput, open_writer

# Docs per batch when the options leave it to the engine (Ray cannot ask the pipeline before
# an actor has loaded it).
RAY_BATCH_SIZE = 64
# Each Ray Data block, and each batch an actor receives, holds this many `nlp.pipe` batches: the
# per-task costs (scheduling, Arrow conversion, the round trip to the driver) are paid once for
# several pipe batches, while a batch lost with a dying worker stays small to redo.
PIPE_BATCHES_PER_TASK = 4


def require_ray() -> None:
    """Import Ray Data, or a SetupError saying how to install it."""
    try:
        import pyarrow  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError as err:
        raise SetupError(
            f"--engine ray needs Ray Data: pip install 'spacy-bert-ner[ray]' ({err})"
        ) from None


Block = Tuple[List[int], List[bytes], str]  # line numbers, raw lines, and why reading ended


def read_blocks(path: Path, after_line: int, block_rows: int) -> Iterator[Block]:
    """The input's lines after `after_line`, in blocks of `block_rows`. An error that ends reading
    (a truncated gzip stream, the OS refusing) comes as a last line whose "fatal" field describes
    it, so the driver writes every line before it, as the local engine does, then stops with its
    message."""
    lines: List[int] = []
    raws: List[bytes] = []
    number = 0
    try:
        with open_input(path) as f:
            while raw := f.readline():
                number += 1
                if number <= after_line:
                    continue
                lines.append(number)
                raws.append(raw)
                if len(lines) >= block_rows:
                    yield lines, raws, ""
                    lines, raws = [], []
    except (EOFError, OSError, zlib.error, AnnotateError) as err:
        error = err if isinstance(err, AnnotateError) else read_error(path, number, err)
        fatal = {"message": str(error), "truncated": isinstance(error, TruncatedInputError)}
        yield [*lines, number + 1], [*raws, b""], json.dumps(fatal)
        return
    if lines:
        yield lines, raws, ""


def _feed_stream(path: Path, block_rows: int) -> Any:
    """A Ray queue of the blocks of a stream (a pipe, FIFO, /dev/stdin) that this process, the
    driver, reads in a thread: a Ray task elsewhere could not open this process's pipe. The queue
    holds a few blocks, so memory stays bounded; None ends it."""
    import ray.util.queue

    queue = ray.util.queue.Queue(maxsize=4, actor_options={"num_cpus": 0})

    def feed() -> None:
        try:
            for block in read_blocks(path, 0, block_rows):
                queue.put(block)
            queue.put(None)
        except Exception:  # the run ended (and Ray with it) before the stream did
            pass

    threading.Thread(target=feed, name="annotate-stream-feeder", daemon=True).start()
    return queue


def _lines_datasource(path: Path, after_line: int, block_rows: int) -> Any:
    """A Ray Datasource streaming one (optionally gzipped) input as rows {"line", "raw",
    "fatal"}: a regular file is opened by the reading task, a stream is read by the driver and
    passed on through a queue (`_feed_stream`)."""
    import pyarrow
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    queue = _feed_stream(path, block_rows) if is_stream(path) else None

    def table(block: Block) -> pyarrow.Table:
        lines, raws, fatal = block
        fatals = [""] * (len(lines) - 1) + [fatal] if lines else []
        return pyarrow.table({"line": lines, "raw": raws, "fatal": fatals})

    def read() -> Iterator[pyarrow.Table]:
        if queue is None:
            yield from map(table, read_blocks(path, after_line, block_rows))
            return
        while (block := queue.get()) is not None:
            yield table(block)

    class LinesDatasource(Datasource):
        def estimate_inmemory_data_size(self) -> Optional[int]:
            return os.path.getsize(path)

        def get_read_tasks(self, parallelism: int, *args: Any, **kwargs: Any) -> List[ReadTask]:
            metadata = BlockMetadata(
                num_rows=None,
                size_bytes=os.path.getsize(path),
                input_files=(str(path),),
                exec_stats=None,
            )
            return [ReadTask(read, metadata)]

    return LinesDatasource()


class RayAnnotator:
    """Ray Data actor: loads the pipeline once, then annotates batches of raw input lines."""

    def __init__(
        self,
        model: str,
        path: str,
        file_format: str,
        quantized: bool,
        use_gpu: bool,
        batch_size: int,
    ) -> None:
        import ray

        self.nlp = load_pipeline(model, quantized=quantized, gpu_id=0 if use_gpu else None)
        self.spans_key = pipeline_spans_key(self.nlp) or "bert_ner"
        self.path, self.file_format, self.batch_size = Path(path), file_format, batch_size
        # Ray restarts an actor whose process died and re-runs the batch it held; the driver
        # counts the lines such an actor annotates, the evidence that a retry happened.
        self.restarted = bool(ray.get_runtime_context().was_current_actor_reconstructed)

    def __call__(self, batch: Dict[str, numpy.ndarray]) -> Dict[str, List[Any]]:
        out: Dict[int, Dict[str, Any]] = {}
        records = []
        for line, raw, fatal in zip(batch["line"].tolist(), batch["raw"], batch["fatal"]):
            if fatal:  # reading ended here: passed on to the driver
                out[line] = {"output": "", "error": "", "fatal": str(fatal)}
                continue
            try:
                record = read_record(
                    self.path, line, bytes(raw), self.file_format, self.nlp.max_length
                )
            except RecordError as err:
                out[line] = {"output": "", "error": err.reason, "fatal": ""}
                continue
            if record is not None:
                records.append(record)
        results: List[Tuple[Record, Union[Doc, RecordError]]]
        try:
            texts = [(record.text, record) for record in records]
            pipe = self.nlp.pipe(texts, as_tuples=True, batch_size=self.batch_size)
            results = [(record, doc) for doc, record in pipe]
        except Exception:  # the pipeline failed on some record: retry them one by one
            results = list(pipe_one_by_one(self.nlp, self.path, records))
        for record, result in results:
            if isinstance(result, RecordError):
                out[record.line] = {"output": "", "error": result.reason, "fatal": ""}
            else:
                output = annotated(result, record, self.spans_key).json
                out[record.line] = {"output": output, "error": "", "fatal": ""}
        lines = sorted(out)
        return {
            "line": lines,
            "output": [out[line]["output"] for line in lines],
            "error": [out[line]["error"] for line in lines],
            "fatal": [out[line]["fatal"] for line in lines],
            "restarted": [self.restarted] * len(lines),
        }


def _ray_results(
    model: str,
    input_path: Path,
    file_format: str,
    after_line: int,
    batch_size: int,
    options: AnnotateOptions,
) -> Iterable[Dict[str, Any]]:
    """(line, output, error, restarted) rows in input order, computed by Ray Data on an actor
    pool."""
    import ray

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    task_rows = batch_size * PIPE_BATCHES_PER_TASK
    dataset = ray.data.read_datasource(_lines_datasource(input_path, after_line, task_rows))
    dataset = dataset.map_batches(
        RayAnnotator,
        fn_constructor_kwargs={
            "model": model,
            "path": str(input_path),
            "file_format": file_format,
            "quantized": options.quantized,
            "use_gpu": options.gpus_per_actor > 0,
            "batch_size": task_rows,
        },
        batch_size=task_rows,
        batch_format="numpy",
        concurrency=options.num_actors,
        num_cpus=options.cpus_per_actor,
        num_gpus=options.gpus_per_actor,
    )
    return dataset.iter_rows()


def annotate_on_ray(
    model: str,
    input_path: Path,
    output_path: Path,
    options: AnnotateOptions = AnnotateOptions(),
    *,
    progress: Optional[Callable[[int], None]] = None,
) -> AnnotateStats:
    """Like `annotate.annotate`, with the pipeline `model` (a package name or a directory every
    node can load) run by `options.num_actors` Ray actors; the local engine's options are
    refused. The input is a local path, read by a Ray task on the driver's node."""
    options.check("ray")
    with OutputLock(output_path):  # before Ray starts: a second run is refused at once
        check_paths(input_path, output_path)
        check_input(input_path, options.resume)
        require_ray()
        return _annotate_on_ray(model, input_path, output_path, options, progress)


def _annotate_on_ray(
    model: str,
    input_path: Path,
    output_path: Path,
    options: AnnotateOptions,
    progress: Optional[Callable[[int], None]],
) -> AnnotateStats:
    """`annotate_on_ray`, the output's lock held and the paths checked."""
    import ray

    if not ray.is_initialized():
        # The processes of a local cluster started here end within seconds of this process,
        # however it dies (`reaper`); a cluster this connects to is left alone.
        with reaped_on_death():
            ray.init(address=options.address, log_to_driver=False)
    cluster_cpus = ray.cluster_resources().get("CPU", 0)
    if options.num_actors * options.cpus_per_actor + 1 > cluster_cpus:
        raise AnnotateError(
            f"{options.num_actors} actors x {options.cpus_per_actor} CPUs plus 1 CPU for reading "
            f"the input need more than the cluster's {cluster_cpus:g} CPUs, so Ray could never "
            "start the run. Lower --num-actors or --cpus-per-actor (a fraction is fine)."
        )
    batch_size = options.batch_size or RAY_BATCH_SIZE
    writer = open_writer(input_path, output_path, options)
    output = AnnotatedOutput(
        writer, chunk_size=batch_size, on_error=options.on_error, progress=progress
    )
    rows = _ray_results(
        str(model),
        input_path,
        input_format(input_path, options.file_format),
        writer.resumed_after_line,
        batch_size,
        options,
    )
    return output.run(lambda: write_rows(rows, output, input_path))


def write_rows(
    rows: Iterable[Dict[str, Any]], output: AnnotatedOutput, input_path: Path
) -> Tuple[int, Optional[ValueError]]:
    """Pass the actors' rows to the output in input order, each line once, and return the last
    line and the error that ended reading the input, if any (a row whose "fatal" field says
    so): a row at or before the last line seen comes from a batch Ray ran again after a worker
    died, and is dropped (and counted in `redelivered`)."""
    seen = output.writer.resumed_after_line
    stats = output.stats
    for row in rows:
        line = int(row["line"])
        if line <= seen:
            stats.redelivered += 1
            continue
        if row.get("fatal"):
            fatal = json.loads(row["fatal"])
            error = TruncatedInputError if fatal["truncated"] else AnnotateError
            return seen, error(fatal["message"])
        seen = line
        stats.restarted_lines += bool(row["restarted"])
        if row["error"]:
            output.reject(RecordError(input_path, line, row["error"]))
        else:
            entities = len(json.loads(row["output"])["entities"])
            output.add(Annotated(line, row["output"]), entities)
    return seen, None
