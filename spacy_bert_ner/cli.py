"""Command line: `python -m spacy_bert_ner COMMAND` (also used by the project's project.yml)."""

import os
from pathlib import Path
from typing import Any, Dict, NoReturn, Optional

import spacy
import srsly
import typer
from tqdm import tqdm
from wasabi import msg

from .annotate import INPUT_FORMATS, ON_ERROR, AnnotateStats, RecordError, annotate
from .convert import ConversionStats, convert
from .inference import load

ENGINES = ("local", "ray")

app = typer.Typer(name="spacy_bert_ner", no_args_is_help=True, add_completion=False)


def fail(err: Exception) -> NoReturn:
    """Print an input error unwrapped (its file:line stays copyable) and exit with status 1."""
    msg.fail("Failed")
    typer.echo(str(err), err=True)
    raise typer.Exit(1)


def print_stats(stats: ConversionStats) -> None:
    """Report what was read, so nothing is lost or changed unnoticed."""
    msg.good(
        f"{stats.docs} docs, {stats.sentences} sentences, {stats.tokens} tokens, "
        f"{sum(stats.entities.values())} entities"
        + (f" (tag scheme: {stats.scheme})" if stats.scheme else "")
    )
    if stats.entities:
        msg.table(sorted(stats.entities.items()), header=("label", "entities"), divider=True)
    for reason, count in sorted(stats.repaired.items()):
        msg.warn(f"Repaired: {reason}: {count}")
    for reason, count in sorted(stats.skipped.items()):
        msg.warn(f"Skipped: {reason}: {count}")
    if not stats.repaired and not stats.skipped:
        msg.info("Nothing repaired or skipped.")


@app.command("convert")
def convert_cli(
    input_path: Path = typer.Argument(..., exists=True, dir_okay=False, help="CoNLL or JSONL file"),
    output_path: Path = typer.Argument(..., dir_okay=False, help="Output .spacy (DocBin) file"),
    file_format: str = typer.Option("auto", "--format", "-f", help="auto, conll or jsonl"),
    scheme: str = typer.Option("auto", "--scheme", "-s", help="CoNLL tags: auto, iob1 or iob2"),
    n_sents: int = typer.Option(10, "--n-sents", "-n", help="Sentences per doc (0: whole doc)"),
    repair: bool = typer.Option(False, "--repair", help="Repair stray I- tags / misaligned spans"),
    lang: str = typer.Option("en", "--lang", "-l", help="Language of the tokenizer for JSONL"),
) -> None:
    """Convert annotated data (CoNLL-2003 style columns or JSONL spans) to a spaCy DocBin."""
    try:
        docbin, stats = convert(
            input_path,
            spacy.blank(lang),
            file_format=file_format,
            scheme=scheme,
            n_sents=n_sents,
            repair=repair,
        )
    except ValueError as err:  # ConversionError names the file and line
        fail(err)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    docbin.to_disk(output_path)
    print_stats(stats)
    msg.good(f"Saved {stats.docs} docs to {output_path}")


@app.command("package-meta")
def package_meta_cli(
    model_path: Path = typer.Argument(..., exists=True, file_okay=False, help="Trained pipeline"),
    metrics_path: Path = typer.Argument(..., exists=True, dir_okay=False, help="Evaluation JSON"),
    output_path: Path = typer.Argument(..., dir_okay=False, help="meta.json to write"),
    name: str = typer.Option(..., "--name", help="Package name without language prefix"),
    version: str = typer.Option(..., "--version", help="Package version"),
) -> None:
    """Write the pipeline's meta.json with the evaluated scores as its `performance`."""
    meta: Dict[str, Any] = srsly.read_json(model_path / "meta.json")
    metrics: Dict[str, Any] = srsly.read_json(metrics_path)
    meta.update(name=name, version=version)
    meta["performance"] = {**meta.get("performance", {}), **metrics}
    output_path.parent.mkdir(parents=True, exist_ok=True)
    srsly.write_json(output_path, meta)
    msg.good(f"Saved meta with scores from {metrics_path} to {output_path}")


@app.command("annotate")
def annotate_cli(
    model: str = typer.Argument(..., help="Pipeline: an installed package name or a directory"),
    input_path: Path = typer.Argument(..., exists=True, dir_okay=False, help="Text/JSONL(.gz)"),
    output_path: Path = typer.Argument(..., dir_okay=False, help="Output JSONL file"),
    file_format: str = typer.Option("auto", "--format", "-f", help="auto, text or jsonl"),
    batch_size: Optional[int] = typer.Option(
        None, "--batch-size", "-b", help="Docs per batch (default: the pipeline's)"
    ),
    gpu_id: int = typer.Option(-1, "--gpu-id", "-g", help="GPU id, or -1 for CPU"),
    n_process: int = typer.Option(1, "--n-process", "-n", help="Worker processes (CPU)"),
    on_error: str = typer.Option("stop", "--on-error", help="Bad records: stop or skip"),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run"),
    quantized: bool = typer.Option(False, "--quantize", help="int8 encoder (faster on CPU)"),
    engine: str = typer.Option("local", "--engine", help="local, or ray (distributed)"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster address"),
    num_actors: int = typer.Option(2, "--num-actors", help="Ray: pipeline actors"),
    cpus_per_actor: float = typer.Option(1.0, "--cpus-per-actor", help="Ray: CPUs per actor"),
    gpus_per_actor: float = typer.Option(0.0, "--gpus-per-actor", help="Ray: GPUs per actor"),
    output_format: str = typer.Option("jsonl", "--output-format", help="Ray: jsonl or parquet"),
) -> None:
    """Annotate plain text (one doc per line) or JSONL records ("text" field; other fields are
    kept), optionally gzipped, into JSONL with each record's entities."""
    if file_format not in INPUT_FORMATS or on_error not in ON_ERROR or engine not in ENGINES:
        fail(
            ValueError(
                f"--format takes {INPUT_FORMATS}, --on-error {ON_ERROR}, --engine {ENGINES}."
            )
        )
    with tqdm(unit=" docs", desc="Annotating", disable=None) as bar:
        try:
            if engine == "ray":
                stats = run_on_ray(
                    model,
                    input_path,
                    output_path,
                    file_format=file_format,
                    output_format=output_format,
                    batch_size=batch_size or 64,
                    num_actors=num_actors,
                    cpus_per_actor=cpus_per_actor,
                    gpus_per_actor=gpus_per_actor,
                    on_error=on_error,
                    resume=resume,
                    quantized=quantized,
                    address=ray_address,
                    progress=bar.update,
                )
            else:
                if gpu_id >= 0:
                    spacy.require_gpu(gpu_id)
                if n_process > 1:  # share the cores between the worker processes' torch threads
                    threads = max(1, (os.cpu_count() or 1) // n_process)
                    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
                stats = annotate(
                    load(model, quantized=quantized),
                    input_path,
                    output_path,
                    file_format=file_format,
                    batch_size=batch_size,
                    n_process=n_process,
                    on_error=on_error,
                    resume=resume,
                    progress=bar.update,
                )
        except RecordError as err:
            bar.close()
            msg.fail("Stopped at a bad record (pass --on-error skip to skip such records)")
            typer.echo(str(err), err=True)
            msg.info("Output is complete up to the previous chunk: rerun with --resume.")
            raise typer.Exit(1) from None
    if stats.resumed_after_line:
        msg.info(f"Resumed after input line {stats.resumed_after_line}")
    for skipped in stats.skipped:
        typer.echo(f"Skipped {skipped}", err=True)
    msg.good(
        f"Annotated {stats.docs} docs ({stats.entities} entities) into {output_path}; "
        f"skipped {len(stats.skipped)} bad records"
    )


def run_on_ray(*args: Any, **kwargs: Any) -> AnnotateStats:
    """The Ray engine, imported only when asked for, with a clear error if Ray is missing."""
    try:
        from .ray_engine import annotate_on_ray
    except ImportError as err:
        fail(ImportError(f"--engine ray needs Ray Data: pip install 'spacy-bert-ner[ray]' ({err})"))
    return annotate_on_ray(*args, **kwargs)
