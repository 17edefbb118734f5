"""Distributed annotation on Ray: Ray Data reads the input and runs the pipeline on an actor pool.

Each actor loads the pipeline once and annotates whole batches; the driver receives the results in
input order (keyed by input line) and writes them through the same resumable writer as the local
engine, so the output is identical to a single-process run. A batch that Ray re-executes after a
worker dies carries lines already written, which the driver drops: nothing is lost or duplicated.
Ray is an optional dependency: `pip install "spacy-bert-ner[ray]"`.
"""

import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Union

import numpy

from .annotate import (
    AnnotateError,
    AnnotateStats,
    RecordError,
    ResumableWriter,
    annotated_line,
    check_length,
    check_paths,
    check_settings,
    input_format,
    open_input,
    parse_line,
    pipeline_failure,
    pipeline_spans_key,
)
from .inference import load

OUTPUT_FORMATS = ("jsonl", "parquet")


def _lines_datasource(path: Path, after_line: int, block_rows: int) -> Any:
    """A Ray Datasource streaming one (optionally gzipped) file as rows {"line", "raw"}."""
    import pyarrow
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    def read() -> Iterator[pyarrow.Table]:
        lines: List[int] = []
        raws: List[bytes] = []
        with open_input(path) as f:
            for number, raw in enumerate(f, start=1):
                if number <= after_line:
                    continue
                lines.append(number)
                raws.append(raw)
                if len(lines) >= block_rows:
                    yield pyarrow.table({"line": lines, "raw": raws})
                    lines, raws = [], []
        if lines:
            yield pyarrow.table({"line": lines, "raw": raws})

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
        import spacy

        if use_gpu:
            spacy.require_gpu(0)
        self.nlp = load(model, quantized=quantized)
        self.spans_key = pipeline_spans_key(self.nlp) or "bert_ner"
        self.path, self.file_format, self.batch_size = Path(path), file_format, batch_size

    def __call__(self, batch: Dict[str, numpy.ndarray]) -> Dict[str, List[Any]]:
        out: Dict[int, Dict[str, Any]] = {}
        records = []
        max_length = self.nlp.max_length
        for line, raw in zip(batch["line"].tolist(), batch["raw"]):
            try:
                record = parse_line(self.path, line, bytes(raw), self.file_format)
                if record is not None:
                    check_length(self.path, record, max_length)
            except RecordError as err:
                out[line] = {"output": "", "error": err.reason}
                continue
            if record is not None:
                records.append(record)
        try:
            texts = [(record.text, record) for record in records]
            docs = list(self.nlp.pipe(texts, as_tuples=True, batch_size=self.batch_size))
        except Exception:  # the pipeline failed on some record: retry them one by one
            docs = []
            for record in records:
                try:
                    docs.append((self.nlp(record.text), record))
                except Exception as err:
                    out[record.line] = {
                        "output": "",
                        "error": pipeline_failure(self.path, record, err).reason,
                    }
        for doc, record in docs:
            line_out = annotated_line(doc, record, self.spans_key).rstrip("\n")
            out[record.line] = {"output": line_out, "error": ""}
        lines = sorted(out)
        return {
            "line": lines,
            "output": [out[line]["output"] for line in lines],
            "error": [out[line]["error"] for line in lines],
        }


def _ray_results(
    model: str,
    input_path: Path,
    file_format: str,
    after_line: int,
    *,
    batch_size: int,
    num_actors: int,
    cpus_per_actor: float,
    gpus_per_actor: float,
    quantized: bool,
) -> Iterable[Dict[str, Any]]:
    """(line, output, error) rows in input order, computed by Ray Data on an actor pool."""
    import ray

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    dataset = ray.data.read_datasource(_lines_datasource(input_path, after_line, batch_size * 4))
    dataset = dataset.map_batches(
        RayAnnotator,
        fn_constructor_kwargs={
            "model": model,
            "path": str(input_path),
            "file_format": file_format,
            "quantized": quantized,
            "use_gpu": gpus_per_actor > 0,
            "batch_size": batch_size * 4,
        },
        batch_size=batch_size * 4,
        batch_format="numpy",
        concurrency=num_actors,
        num_cpus=cpus_per_actor,
        num_gpus=gpus_per_actor,
    )
    return dataset.iter_rows()


class ParquetWriter:
    """Output as Parquet: one row per record with its line, text, entities and full JSON record."""

    after_line = 0  # Parquet output always starts from the beginning

    def __init__(self, path: Path, overwrite: bool = False) -> None:
        import pyarrow
        import pyarrow.parquet

        if Path(path).exists() and not overwrite:
            raise AnnotateError(
                f"{path} already exists: pass --overwrite to replace it, or choose another path."
            )
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

    @staticmethod
    def row(line: int, output: str) -> Dict[str, Any]:
        """The Parquet row of one output record (its JSON line)."""
        record = json.loads(output)
        return {
            "line": line,
            "text": record["text"],
            "entities": record["entities"],
            "record": output,
        }

    def write(self, rows: List[Dict[str, Any]], last_line: int) -> None:
        if rows:
            table = self.pyarrow.Table.from_pylist(rows, schema=self.schema)
            self.writer.write_table(table)

    def close(self) -> None:
        self.writer.close()


def annotate_on_ray(
    model: str,
    input_path: Path,
    output_path: Path,
    *,
    file_format: str = "auto",
    output_format: str = "jsonl",
    batch_size: int = 64,
    num_actors: int = 2,
    cpus_per_actor: float = 1.0,
    gpus_per_actor: float = 0.0,
    on_error: str = "stop",
    resume: bool = False,
    overwrite: bool = False,
    quantized: bool = False,
    address: Optional[str] = None,
    progress: Optional[Callable[[int], None]] = None,
) -> AnnotateStats:
    """Like `annotate.annotate`, with the pipeline run by `num_actors` Ray actors.

    address (Optional[str]): A Ray cluster to connect to ("auto", "ray://host:10001"); None starts
        or reuses a local one.
    cpus_per_actor (float): CPUs Ray reserves for each pipeline actor; the reading task needs one
        more CPU besides all actors, or the run cannot start.
    output_format (str): "jsonl" (resumable) or "parquet".
    """
    import ray

    check_settings(batch_size, 1, on_error)
    check_paths(input_path, output_path)
    if output_format not in OUTPUT_FORMATS:
        raise AnnotateError(f"Unknown output format {output_format!r}: use jsonl or parquet.")
    if output_format == "parquet" and resume:
        raise AnnotateError("--resume needs JSONL output: Parquet files cannot be appended to.")
    if num_actors < 1 or cpus_per_actor <= 0 or gpus_per_actor < 0:
        raise AnnotateError(
            "--num-actors must be 1 or more, --cpus-per-actor above 0 and --gpus-per-actor 0 or "
            f"more (got {num_actors}, {cpus_per_actor:g}, {gpus_per_actor:g})."
        )
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    cluster_cpus = ray.cluster_resources().get("CPU", 0)
    if num_actors * cpus_per_actor + 1 > cluster_cpus:
        raise AnnotateError(
            f"{num_actors} actors x {cpus_per_actor} CPUs plus 1 CPU for reading the input need "
            f"more than the cluster's {cluster_cpus:g} CPUs, so Ray could never start the run. "
            "Lower --num-actors or --cpus-per-actor (a fraction is fine)."
        )
    stats = AnnotateStats()
    parquet = output_format == "parquet"
    writer: Union[ParquetWriter, ResumableWriter] = (
        ParquetWriter(output_path, overwrite)
        if parquet
        else ResumableWriter(output_path, resume, input_path=input_path, overwrite=overwrite)
    )
    after_line = stats.resumed_after_line = writer.after_line
    rows = _ray_results(
        str(model),
        input_path,
        input_format(input_path, file_format),
        after_line,
        batch_size=batch_size,
        num_actors=num_actors,
        cpus_per_actor=cpus_per_actor,
        gpus_per_actor=gpus_per_actor,
        quantized=quantized,
    )
    pending: List[Any] = []
    last_line = after_line

    def flush() -> None:
        writer.write(pending, last_line)
        if progress is not None and pending:
            progress(len(pending))
        pending.clear()

    try:
        for row in rows:
            line = int(row["line"])
            if line <= last_line:  # re-executed after a worker died: already written
                continue
            if row["error"]:
                err = RecordError(input_path, line, row["error"])
                if on_error == "stop":
                    flush()
                    raise err
                stats.skipped.append(err)
            else:
                stats.docs += 1
                stats.entities += len(json.loads(row["output"])["entities"])
                output = row["output"]
                pending.append(ParquetWriter.row(line, output) if parquet else output + "\n")
            last_line = line
            if len(pending) >= batch_size:
                flush()
        flush()
    finally:
        writer.close()
    return stats
