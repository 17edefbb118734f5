"""Command line: `python -m spacy_bert_ner COMMAND` (also used by the project's project.yml)."""

from pathlib import Path
from typing import Any, Callable, List, NoReturn, Optional

import spacy
import srsly
import typer
from spacy.tokens import DocBin
from tqdm import tqdm
from wasabi import msg

from .annotate import (
    AnnotateError,
    AnnotateOptions,
    RecordError,
    annotate_model,
    annotate_on_ray,
)
from .checkpoints import NEAR_ZERO_F
from .convert import SHARD_TOKENS, ConversionStats, convert_to_disk
from .distillation import DistillError, add_teacher_targets
from .evaluation.analysis import analyze
from .inference import SetupError, load_pipeline
from .workflow.model_card import package_meta
from .workflow.packaging import PackagingError, package_pipeline
from .workflow.report import build_report

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
    if not stats.grouped:
        msg.info(
            "No -DOCSTART- lines: each sentence is its own doc (--n-sents groups the sentences "
            "of a document, and this file marks none)"
        )
    for reason, count in sorted(stats.converted.items()):
        msg.info(f"Converted to IOB2: {reason}: {count}")
    for reason, count in sorted(stats.repaired.items()):
        msg.warn(f"Repaired: {reason}: {count}")
    for reason, count in sorted(stats.skipped.items()):
        msg.warn(f"Skipped: {reason}: {count}")
    if not stats.repaired and not stats.skipped:
        msg.info("Nothing repaired or skipped.")


@app.command("convert")
def convert_cli(
    input_path: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="CoNLL or JSONL file (.gz too; a pipe works)"
    ),
    output_path: Path = typer.Argument(
        ...,
        help="A .spacy file (one DocBin, held in memory until written), or a path without "
        "suffix: a directory of .spacy shards (00000.spacy, ...), written as they fill, in "
        "memory that does not grow with the input; spaCy's corpus reader (spacy train, "
        "spacy.Corpus) reads either. Written in full or not at all, replacing a previous one",
    ),
    file_format: str = typer.Option("auto", "--format", "-f", help="auto, conll or jsonl"),
    scheme: str = typer.Option("auto", "--scheme", "-s", help="CoNLL tags: auto, iob1 or iob2"),
    n_sents: int = typer.Option(10, "--n-sents", "-n", help="Sentences per doc (0: whole doc)"),
    repair: bool = typer.Option(False, "--repair", help="Repair stray I- tags / misaligned spans"),
    lang: str = typer.Option("en", "--lang", "-l", help="Language of the tokenizer for JSONL"),
    shard_size: int = typer.Option(
        SHARD_TOKENS, "--shard-size", help="Tokens per .spacy shard of a directory output"
    ),
) -> None:
    """Convert annotated data (CoNLL-2003 style columns or JSONL spans) to spaCy's DocBin format:
    one .spacy file, or for big data a directory of .spacy shards (bounded memory)."""
    try:
        stats = convert_to_disk(
            input_path,
            output_path,
            spacy.blank(lang),
            file_format=file_format,
            scheme=scheme,
            n_sents=n_sents,
            repair=repair,
            shard_tokens=shard_size,
        )
    except ValueError as err:  # ConversionError names the file and line
        fail(err)
    except OSError as err:
        fail(
            OSError(
                f"{output_path}: cannot write the output ({err.strerror or err}); choose a "
                "writable path."
            )
        )
    print_stats(stats)
    for warning in stats.warnings:
        msg.warn(warning)
    shards = f" in {stats.files} .spacy files" if stats.files > 1 else ""
    msg.good(f"Saved {stats.docs} docs to {output_path}{shards}")


@app.command("package-meta")
def package_meta_cli(
    model_path: Path = typer.Argument(..., exists=True, file_okay=False, help="Trained pipeline"),
    metrics_path: Path = typer.Argument(..., exists=True, dir_okay=False, help="Test scores JSON"),
    output_path: Path = typer.Argument(..., dir_okay=False, help="meta.json to write"),
    name: str = typer.Option(..., "--name", help="Package name without language prefix"),
    version: str = typer.Option(..., "--version", help="Package version"),
    train_log: Optional[Path] = typer.Option(
        None, "--train-log", exists=True, dir_okay=False, help="Training log (JSONL)"
    ),
    dev_metrics: Optional[Path] = typer.Option(
        None, "--dev-metrics", exists=True, dir_okay=False, help="Dev scores JSON"
    ),
    train_data: Optional[str] = typer.Option(None, "--train-data", help="Train data file"),
    dev_data: Optional[str] = typer.Option(None, "--dev-data", help="Dev data file"),
    test_data: Optional[str] = typer.Option(None, "--test-data", help="Test data file"),
    gpu_id: int = typer.Option(-1, "--gpu-id", "-g", help="GPU the scores were measured on"),
) -> None:
    """Write the pipeline's meta.json with the test scores as its `performance`, and a model card
    (description, sources, notes) that `spacy package` turns into the package's README."""
    data = {
        split: path
        for split, path in (("train", train_data), ("dev", dev_data), ("test", test_data))
        if path
    }
    try:
        meta = package_meta(
            model_path,
            metrics_path,
            name=name,
            version=version,
            data=data,
            gpu_id=gpu_id,
            train_log_path=train_log,
            dev_metrics_path=dev_metrics,
        )
    except (ValueError, OSError) as err:  # each names the file it could not read
        fail(err)
    write_output(output_path, lambda path: srsly.write_json(path, meta))
    msg.good(f"Saved meta and model card with scores from {metrics_path} to {output_path}")


@app.command("package")
def package_cli(
    model_path: Path = typer.Argument(..., exists=True, file_okay=False, help="Trained pipeline"),
    output_dir: Path = typer.Argument(..., file_okay=False, help="Directory of the packages"),
    meta_path: Path = typer.Option(
        ..., "--meta-path", exists=True, dir_okay=False, help="meta.json of `package-meta`"
    ),
    name: str = typer.Option(..., "--name", help="Package name without language prefix"),
    version: str = typer.Option(..., "--version", help="Package version"),
) -> None:
    """Package the trained pipeline with spaCy's `package`, and this package's wheel beside it, so
    that `pip install DIST/*.whl` is all another machine needs (packaging.py says why)."""
    performance = srsly.read_json(meta_path).get("performance") or {}
    if float(performance.get("ents_f") or 0.0) < NEAR_ZERO_F:
        msg.fail(
            f"This pipeline scores test entity F1 {100 * float(performance.get('ents_f') or 0):.2f}"
            ": it finds (next to) no entities. Packaging it anyway; check the training data, "
            "its labels and the run length (training/log.jsonl) before shipping it."
        )
    try:
        wheels = package_pipeline(model_path, output_dir, meta_path, name=name, version=version)
    except PackagingError as err:
        fail(err)
    msg.good("Install the pipeline on any machine (with its dependencies from PyPI) with:")
    print(f"python -m pip install {wheels[0].parent}/*.whl")


@app.command("report")
def report_cli(
    log_path: Path = typer.Argument(..., exists=True, dir_okay=False, help="Training log JSONL"),
    dev_path: Path = typer.Argument(..., exists=True, dir_okay=False, help="Dev scores JSON"),
    test_path: Path = typer.Argument(..., exists=True, dir_okay=False, help="Test scores JSON"),
    analysis_path: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="errors.json of `analyze`"
    ),
    output_path: Path = typer.Argument(..., dir_okay=False, help="report.html to write"),
    errors_page: Optional[Path] = typer.Option(
        None, "--errors-page", help="displaCy page to link (default: errors.html beside the JSON)"
    ),
    title: str = typer.Option("bert_ner training report", "--title", help="Page title"),
) -> None:
    """An HTML report of a training run, with the PNGs it embeds in a folder beside it: dev F1 and
    loss over steps, P/R/F per type, the confusion matrix, the confidences' reliability, and the
    most frequent confusions."""
    if errors_page is None:
        errors_page = analysis_path.parent / "errors.html"
    try:
        written = build_report(
            log_path,
            dev_path,
            test_path,
            analysis_path,
            output_path,
            errors_page=errors_page,
            title=title,
        )
    except (ValueError, OSError, ImportError) as err:
        fail(err)
    msg.good(f"Saved {output_path} and {len(written) - 1} figures in {output_path.with_suffix('')}")


def write_output(path: Path, write: Callable[[Path], Any]) -> None:
    """Create the output's folder and write it, or fail with one line if the OS refuses."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
    except OSError as err:
        fail(
            OSError(
                f"{path}: cannot write the output ({err.strerror or err}); choose a writable path."
            )
        )


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
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output"),
    quantized: bool = typer.Option(False, "--quantize", help="int8 encoder (CPU only)"),
    engine: str = typer.Option("local", "--engine", help="local, or ray (distributed)"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster address"),
    num_actors: int = typer.Option(2, "--num-actors", help="Ray: pipeline actors"),
    cpus_per_actor: float = typer.Option(1.0, "--cpus-per-actor", help="Ray: CPUs per actor"),
    gpus_per_actor: float = typer.Option(0.0, "--gpus-per-actor", help="Ray: GPUs per actor"),
    output_format: str = typer.Option("jsonl", "--output-format", help="Ray: jsonl or parquet"),
) -> None:
    """Annotate plain text (one doc per line) or JSONL records ("text" field; other fields are
    kept), optionally gzipped, into JSONL with each record's entities."""
    options = AnnotateOptions(
        file_format=file_format,
        batch_size=batch_size,
        on_error=on_error,
        resume=resume,
        overwrite=overwrite,
        quantized=quantized,
        gpu_id=gpu_id,
        n_process=n_process,
        address=ray_address,
        num_actors=num_actors,
        cpus_per_actor=cpus_per_actor,
        gpus_per_actor=gpus_per_actor,
        output_format=output_format,
    )
    try:
        options.check(engine)  # before the progress bar, so a mistake prints one line alone
        run = annotate_on_ray if engine == "ray" else annotate_model
        with tqdm(unit=" docs", desc="Annotating", disable=None) as bar:
            stats = run(model, input_path, output_path, options, progress=bar.update)
    except RecordError as err:
        msg.fail("Stopped at a bad record (pass --on-error skip to skip such records)")
        typer.echo(str(err), err=True)
        msg.info(
            "The output is complete up to the record before it: rerun with --resume "
            "--on-error skip to skip it and go on, or fix it and rerun with --overwrite."
        )
        raise typer.Exit(1) from None
    except (AnnotateError, SetupError) as err:
        fail(err)
    except OSError as err:  # one the engines did not put in words: still one line, with its path
        fail(OSError(f"{err.filename or input_path}: {err.strerror or err}"))
    if stats.resumed_after_line:
        msg.info(f"Resumed after input line {stats.resumed_after_line}")
    for skipped in stats.skipped:
        typer.echo(f"Skipped {skipped}", err=True)
    msg.good(
        f"Annotated {stats.docs} docs ({stats.entities} entities) into {output_path}; "
        f"skipped {len(stats.skipped)} bad records"
    )


@app.command("distill")
def distill_cli(
    input_path: Path = typer.Argument(..., exists=True, dir_okay=False, help="Training .spacy"),
    output_path: Path = typer.Argument(..., dir_okay=False, help="Output .spacy, with targets"),
    teachers: List[str] = typer.Argument(..., help="Trained pipelines: packages or directories"),
    component: str = typer.Option("bert_ner", "--component", "-c", help="The teachers' NER pipe"),
    batch_size: int = typer.Option(64, "--batch-size", "-b", help="Docs per batch"),
    gpu_id: int = typer.Option(-1, "--gpu-id", "-g", help="GPU id, or -1 for CPU"),
) -> None:
    """Store the teachers' mean tag probabilities on each training doc, for training with
    `--components.bert_ner.teacher_weight` above 0 on the output (distillation: the teachers'
    knowledge in one model)."""
    try:
        nlps = [load_pipeline(teacher, gpu_id=gpu_id) for teacher in teachers]
    except SetupError as err:
        fail(err)
    try:
        docs = list(DocBin().from_disk(input_path).get_docs(nlps[0].vocab))
    except Exception as err:  # spaCy raises several types for a file that is not a DocBin
        fail(ValueError(f"{input_path}: not a spaCy DocBin (.spacy) file ({err})."))
    total = len(docs) * len(nlps)
    with tqdm(total=total, unit=" docs", desc="Teachers predicting", disable=None) as bar:
        try:
            tags = add_teacher_targets(docs, nlps, component, batch_size, progress=bar.update)
        except DistillError as err:
            fail(err)
    write_output(output_path, DocBin(docs=docs, store_user_data=True).to_disk)
    msg.good(
        f"{len(docs)} docs with the mean probabilities of {len(nlps)} teacher(s) over "
        f"{len(tags)} tags in {output_path}"
    )


@app.command("analyze")
def analyze_cli(
    model: str = typer.Argument(..., help="Pipeline: an installed package name or a directory"),
    data_path: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="Gold .spacy/CoNLL/JSONL"
    ),
    output_dir: Path = typer.Argument(..., file_okay=False, help="Writes errors.json, errors.html"),
    n_sents: int = typer.Option(10, "--n-sents", "-n", help="CoNLL input: sentences per doc"),
    scheme: str = typer.Option("auto", "--scheme", "-s", help="CoNLL tags: auto, iob1 or iob2"),
    repair: bool = typer.Option(False, "--repair", help="Repair stray I- tags / misaligned spans"),
    max_examples: int = typer.Option(5, "--max-examples", help="Examples kept per confusion"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", help="Docs per batch"),
    gpu_id: int = typer.Option(-1, "--gpu-id", "-g", help="GPU id, or -1 for CPU"),
) -> None:
    """Error analysis of a pipeline on gold data: P/R/F overall and per type, the most frequent
    confusions (type, boundary, missed, spurious) with examples, each predicted entity's confidence
    and whether it was right (for a bert_ner pipeline), and a displaCy page of errors."""
    try:
        nlp = load_pipeline(model, gpu_id=gpu_id)
    except SetupError as err:
        fail(err)
    try:
        analyze(
            nlp,
            data_path,
            output_dir,
            n_sents=n_sents,
            scheme=scheme,
            repair=repair,
            max_examples=max_examples,
            batch_size=batch_size,
            title=f"Errors of {model} on {data_path.name}",
        )
    except ValueError as err:  # gold data that cannot be read, named with its file
        fail(err)
