import gzip
import json
from pathlib import Path
from typing import Any, Dict, List

import pytest
import spacy
from spacy.language import Language
from typer.testing import CliRunner

from spacy_bert_ner.annotate import annotate
from spacy_bert_ner.annotate.options import (
    AnnotateError,
    AnnotateOptions,
    RecordError,
    TruncatedInputError,
)
from spacy_bert_ner.annotate.reading import input_format
from spacy_bert_ner.cli import app

TEXTS = [
    "john smith works for acme corp in paris .",
    "the weather was fine and nothing happened .",
    "yesterday ahmed khan visited new york with peter .",
    "",
    "mary jones said google will grow .",
]
EXPECTED = [
    [("john smith", "PER"), ("acme corp", "ORG"), ("paris", "LOC")],
    [],
    [("ahmed khan", "PER"), ("new york", "LOC"), ("peter", "PER")],
    [],
    [("mary jones", "PER"), ("google", "ORG")],
]


@pytest.fixture(scope="module")
def nlp(pipeline_path: Path) -> Language:
    return spacy.load(pipeline_path)


def read_jsonl(path: Path) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf8").splitlines()]


def ents(record: Dict[str, Any]) -> List[tuple]:
    return [(e["text"], e["label"]) for e in record["entities"]]


def test_plain_text_lines(nlp, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("\n".join(TEXTS) + "\n", encoding="utf8")
    stats = annotate(nlp, source, tmp_path / "out.jsonl", AnnotateOptions(batch_size=2))
    out = read_jsonl(tmp_path / "out.jsonl")
    assert [r["text"] for r in out] == TEXTS
    assert [ents(r) for r in out] == EXPECTED
    assert (stats.docs, stats.entities, stats.skipped) == (5, 8, [])
    first = out[0]["entities"][0]
    assert TEXTS[0][first["start"] : first["end"]] == first["text"] == "john smith"
    assert 0.0 <= first["score"] <= 1.0


def test_gzipped_jsonl_keeps_other_fields(nlp, tmp_path):
    source = tmp_path / "in.jsonl.gz"
    records = [{"id": i, "text": text, "meta": {"n": i}} for i, text in enumerate(TEXTS)]
    with gzip.open(source, "wt", encoding="utf8") as f:
        f.write("\n".join(json.dumps(r) for r in records) + "\n\n")
    assert input_format(source) == "jsonl"
    annotate(nlp, source, tmp_path / "out.jsonl")
    out = read_jsonl(tmp_path / "out.jsonl")
    assert [(r["id"], r["meta"]) for r in out] == [(i, {"n": i}) for i in range(5)]
    assert [ents(r) for r in out] == EXPECTED


def bad_input(tmp_path: Path) -> Path:
    source = tmp_path / "bad.jsonl"
    lines = [
        json.dumps({"text": TEXTS[0]}).encode(),
        b'{"text": "unclosed',
        json.dumps({"title": "no text"}).encode(),
        '{"text": "caf\xe9"}'.encode("latin1"),
        json.dumps({"text": TEXTS[4]}).encode(),
    ]
    source.write_bytes(b"\n".join(lines) + b"\n")
    return source


def test_bad_record_stops_by_default(nlp, tmp_path):
    with pytest.raises(RecordError, match=r"bad.jsonl:2: invalid JSON"):
        annotate(nlp, bad_input(tmp_path), tmp_path / "out.jsonl")


def test_bad_records_skipped_and_counted(nlp, tmp_path):
    stats = annotate(
        nlp, bad_input(tmp_path), tmp_path / "out.jsonl", AnnotateOptions(on_error="skip")
    )
    assert [(e.line, e.reason.split(":")[0].split(" (")[0]) for e in stats.skipped] == [
        (2, "invalid JSON"),
        (3, 'expected a JSON object with a string "text" field'),
        (4, "not valid UTF-8"),
    ]
    assert stats.skipped[1].reason.endswith('(got no "text" field).')
    assert stats.skipped[0].reason.endswith("(column 10, at '\"unclosed').")
    assert [ents(r) for r in read_jsonl(tmp_path / "out.jsonl")] == [EXPECTED[0], EXPECTED[4]]


def test_interrupted_run_resumes_without_duplicates(nlp, tmp_path):
    source = tmp_path / "in.txt"
    texts = [f"{text} {i}" for i in range(12) for text in TEXTS[:3]]
    source.write_text("\n".join(texts) + "\n", encoding="utf8")
    output = tmp_path / "out.jsonl"
    calls = []

    def interrupt(n: int) -> None:
        calls.append(n)
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        annotate(nlp, source, output, AnnotateOptions(batch_size=4), progress=interrupt)
    # A half-written line at the end, as a kill during a write would leave.
    with open(output, "a", encoding="utf8") as f:
        f.write('{"text": "partial')
    assert len(output.read_text().splitlines()) == 9
    stats = annotate(nlp, source, output, AnnotateOptions(batch_size=4, resume=True))
    assert stats.resumed_after_line == 8
    out = read_jsonl(output)
    assert [r["text"] for r in out] == texts
    uninterrupted = tmp_path / "full.jsonl"
    annotate(nlp, source, uninterrupted, AnnotateOptions(batch_size=4))
    full = read_jsonl(uninterrupted)
    assert [ents(r) for r in out] == [ents(r) for r in full]
    # Batches differ after the resume, so padding differs: scores agree up to float noise.
    scores = [e["score"] for r in out for e in r["entities"]]
    assert scores == pytest.approx([e["score"] for r in full for e in r["entities"]], abs=1e-5)


def test_cli(pipeline_path, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("\n".join(TEXTS) + "\n", encoding="utf8")
    output = tmp_path / "out.jsonl"
    args = ["annotate", str(pipeline_path), str(source), str(output), "--batch-size", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Annotated 5 docs (8 entities)" in result.output
    assert [ents(r) for r in read_jsonl(output)] == EXPECTED
    bad = bad_input(tmp_path)
    args = ["annotate", str(pipeline_path), str(bad), str(output), "--overwrite"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert "bad.jsonl:2: invalid JSON" in result.output and "--on-error skip" in result.output
    skip = [*args, "--on-error", "skip"]
    result = CliRunner().invoke(app, skip)
    assert result.exit_code == 0, result.output
    assert (
        "skipped 3 bad records" in result.output and "bad.jsonl:4: not valid UTF-8" in result.output
    )
    # A stopped run resumes with --on-error skip, without redoing what it wrote.
    stop = ["annotate", str(pipeline_path), str(bad), str(tmp_path / "stop.jsonl")]
    result = CliRunner().invoke(app, stop)
    assert result.exit_code == 1 and "--resume --on-error skip" in result.output
    result = CliRunner().invoke(app, [*stop, "--resume", "--on-error", "skip"])
    assert result.exit_code == 0 and "Resumed after input line 1" in result.output
    assert [ents(r) for r in read_jsonl(tmp_path / "stop.jsonl")] == [EXPECTED[0], EXPECTED[4]]


def write_lines(path: Path, lines: List[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf8")
    return path


def invoke(*args: Any) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


def test_input_as_output_is_refused(nlp, tmp_path, pipeline_path):
    source = write_lines(tmp_path / "same.txt", TEXTS)
    with pytest.raises(AnnotateError, match="is the input file"):
        annotate(nlp, source, source)
    result = invoke("annotate", pipeline_path, source, source, "--overwrite")
    assert result.exit_code == 1 and "is the input file" in result.output
    assert source.read_text(encoding="utf8").splitlines() == TEXTS


def test_existing_output_needs_resume_or_overwrite(nlp, tmp_path):
    source = write_lines(tmp_path / "in.txt", TEXTS)
    output = tmp_path / "out.jsonl"
    annotate(nlp, source, output)
    complete = output.read_bytes()
    with pytest.raises(AnnotateError, match="already exists .* --resume .* --overwrite"):
        annotate(nlp, write_lines(tmp_path / "other.txt", TEXTS[:1]), output)
    assert output.read_bytes() == complete
    # Resuming a complete run adds nothing; --overwrite starts again (and records a new progress).
    stats = annotate(nlp, source, output, AnnotateOptions(resume=True))
    assert (stats.docs, stats.resumed_after_line, output.read_bytes()) == (0, 5, complete)
    annotate(
        nlp, write_lines(tmp_path / "other.txt", TEXTS[:1]), output, AnnotateOptions(overwrite=True)
    )
    assert len(read_jsonl(output)) == 1
    with pytest.raises(AnnotateError, match="pass only one"):
        annotate(nlp, source, output, AnnotateOptions(resume=True, overwrite=True))


def test_resume_checks_the_progress_record(nlp, tmp_path):
    source = write_lines(tmp_path / "in.txt", TEXTS)
    output = tmp_path / "out.jsonl"
    progress = tmp_path / "out.jsonl.progress"
    annotate(nlp, source, output)
    complete = output.read_bytes()
    # A different input (same name, other content).
    other = write_lines(tmp_path / "in.txt", [*TEXTS, "one more line ."])
    with pytest.raises(AnnotateError, match="was written for the input .* differs"):
        annotate(nlp, other, output, AnnotateOptions(resume=True))
    write_lines(source, TEXTS)
    # The output shorter than the progress record vouches for (replaced or truncated).
    output.write_bytes(complete[:10])
    with pytest.raises(AnnotateError, match="truncated or replaced"):
        annotate(nlp, source, output, AnnotateOptions(resume=True))
    assert output.read_bytes() == complete[:10]
    # The output deleted, the progress record kept.
    output.unlink()
    with pytest.raises(AnnotateError, match="the output is missing"):
        annotate(nlp, source, output, AnnotateOptions(resume=True))
    # An output without progress record.
    output.write_bytes(complete)
    progress.unlink()
    with pytest.raises(AnnotateError, match="no progress record"):
        annotate(nlp, source, output, AnnotateOptions(resume=True))
    progress.write_text("{not json")
    with pytest.raises(AnnotateError, match="not a readable progress record"):
        annotate(nlp, source, output, AnnotateOptions(resume=True))
    assert output.read_bytes() == complete


def test_bad_settings_refused(nlp, tmp_path, pipeline_path):
    source = write_lines(tmp_path / "in.txt", TEXTS)
    for kwargs in ({"batch_size": 0}, {"batch_size": -5}, {"n_process": 0}):
        with pytest.raises(AnnotateError, match="must be"):
            annotate(nlp, source, tmp_path / "out.jsonl", AnnotateOptions(**kwargs))
    for option in (["--batch-size", "0"], ["--batch-size", "-5"], ["--n-process", "0"]):
        result = invoke("annotate", pipeline_path, source, tmp_path / "o.jsonl", *option)
        assert result.exit_code == 1 and "must be" in result.output
        assert "Traceback" not in result.output and not (tmp_path / "o.jsonl").exists()


def test_skip_survives_records_the_pipeline_cannot_take(nlp, tmp_path):
    lines = [
        json.dumps({"text": TEXTS[0]}),
        '{"text": "Obama \\ud800 in Berlin."}',
        json.dumps({"text": "x " * 60}),
        json.dumps({"text": TEXTS[2], "note": "\\udfff"[0:0] + "ok"}),
        '{"text": "fine", "note": "\\udc80"}',
        json.dumps({"text": TEXTS[4]}),
    ]
    source = write_lines(tmp_path / "in.jsonl", lines)
    output = tmp_path / "out.jsonl"
    max_length = nlp.max_length
    nlp.max_length = 100
    try:
        stats = annotate(nlp, source, output, AnnotateOptions(on_error="skip", batch_size=8))
        with pytest.raises(RecordError, match=r"in.jsonl:2: a lone surrogate"):
            annotate(nlp, source, tmp_path / "stop.jsonl", AnnotateOptions(batch_size=8))
    finally:
        nlp.max_length = max_length
    assert [(e.line, e.reason.split(" ")[1]) for e in stats.skipped] == [
        (2, "lone"),
        (3, "text"),
        (5, "lone"),
    ]
    assert "nlp.max_length" in stats.skipped[1].reason
    assert [ents(r) for r in read_jsonl(output)] == [EXPECTED[0], EXPECTED[2], EXPECTED[4]]
    # Stopping writes every record before the bad one.
    assert [ents(r) for r in read_jsonl(tmp_path / "stop.jsonl")] == [EXPECTED[0]]


def test_pipeline_failure_falls_back_to_single_records(pipeline_path, tmp_path):
    """A record the pipeline fails on costs only itself, not its batch."""
    from spacy.language import Language

    @Language.component("fails_on_boom")
    def fails_on_boom(doc):
        if "boom" in doc.text:
            raise RuntimeError("exploded\nsecond line")
        return doc

    nlp = spacy.load(pipeline_path)
    nlp.add_pipe("fails_on_boom")
    texts = [f"{TEXTS[i % 3]} {i}" for i in range(10)]
    texts[3] = "john boom"
    texts[8] = "boom again"
    source = write_lines(tmp_path / "in.txt", texts)
    stats = annotate(
        nlp, source, tmp_path / "out.jsonl", AnnotateOptions(on_error="skip", batch_size=4)
    )
    assert [(e.line, e.reason) for e in stats.skipped] == [
        (n, "the pipeline failed on this record (RuntimeError: exploded).") for n in (4, 9)
    ]
    good = [t for i, t in enumerate(texts) if i not in (3, 8)]
    assert [r["text"] for r in read_jsonl(tmp_path / "out.jsonl")] == good
    with pytest.raises(RecordError, match="in.txt:4: the pipeline failed"):
        annotate(nlp, source, tmp_path / "stop.jsonl", AnnotateOptions(batch_size=4))
    assert [r["text"] for r in read_jsonl(tmp_path / "stop.jsonl")] == texts[:3]


def test_truncated_gzip_keeps_what_was_decoded(nlp, tmp_path, pipeline_path):
    texts = [f"{TEXTS[i % 3]} {i}" for i in range(400)]
    data = gzip.compress(("\n".join(texts) + "\n").encode("utf8"))
    source = tmp_path / "in.txt.gz"
    source.write_bytes(data[: len(data) // 2])
    output = tmp_path / "out.jsonl"
    with pytest.raises(TruncatedInputError, match=r"in.txt.gz:\d+: the compressed input") as err:
        annotate(nlp, source, output, AnnotateOptions(batch_size=1000))
    written = [r["text"] for r in read_jsonl(output)]
    assert written and written == texts[: len(written)]
    assert f"lines 1-{len(written)} were read" in str(err.value)
    result = invoke("annotate", pipeline_path, source, output, "--overwrite")
    assert result.exit_code == 1 and "truncated or corrupt" in result.output
    assert "Traceback" not in result.output


def test_byte_order_mark_is_not_text(nlp, tmp_path):
    source = tmp_path / "bom.txt"
    source.write_bytes(b"\xef\xbb\xbf" + ("\n".join(TEXTS) + "\n").encode("utf8"))
    annotate(nlp, source, tmp_path / "out.jsonl")
    out = read_jsonl(tmp_path / "out.jsonl")
    assert out[0]["text"] == TEXTS[0] and [ents(r) for r in out] == EXPECTED


def test_scores_read_from_the_components_spans_key(pipeline_path, tmp_path):
    nlp = spacy.load(pipeline_path, config={"components": {"bert_ner": {"spans_key": "other"}}})
    source = write_lines(tmp_path / "in.txt", TEXTS[:1])
    annotate(nlp, source, tmp_path / "out.jsonl")
    scores = [e["score"] for e in read_jsonl(tmp_path / "out.jsonl")[0]["entities"]]
    assert len(scores) == 3 and all(isinstance(s, float) for s in scores)


@pytest.mark.parametrize(
    "options,expected",
    [
        (["--output-format", "parquet"], "--output-format only applies to --engine ray"),
        (["--num-actors", "3"], "--num-actors only applies to --engine ray"),
        (["--engine", "ray", "--n-process", "2"], "--n-process only applies to --engine local"),
        (["--engine", "ray", "--gpu-id", "0"], "--gpu-id only applies to --engine local"),
        (["--quantize", "--gpu-id", "0"], "--quantize is for CPU inference"),
        (["--engine", "ray", "--gpu-id", "-1", "--n-process", "1", "--batch-size", "0"], "must be"),
    ],
)
def test_options_the_engine_ignores_are_refused(pipeline_path, tmp_path, options, expected):
    source = write_lines(tmp_path / "in.txt", TEXTS)
    result = invoke("annotate", pipeline_path, source, tmp_path / "out.jsonl", *options)
    assert result.exit_code == 1 and expected in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "out.jsonl").exists()


def test_setup_errors_are_one_line(pipeline_path, tmp_path, monkeypatch):
    import sys

    source = write_lines(tmp_path / "in.txt", TEXTS)
    output = tmp_path / "out.jsonl"
    result = invoke("annotate", "en_no_such_pipeline", source, output)
    assert (
        result.exit_code == 1 and "Can't load the pipeline 'en_no_such_pipeline'" in result.output
    )
    try:
        import cupy  # noqa: F401
    except ImportError:
        result = invoke("annotate", pipeline_path, source, output, "--gpu-id", "0")
        assert result.exit_code == 1 and "--gpu-id 0: no usable GPU" in result.output
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "ray.data", None)
    result = invoke("annotate", pipeline_path, source, output, "--engine", "ray")
    assert result.exit_code == 1 and "pip install 'spacy-bert-ner[ray]'" in result.output
    assert not isinstance(result.exception, ImportError)


MULTIPROCESS_SCRIPT = """
import multiprocessing, sys
from pathlib import Path

import spacy, torch

from spacy_bert_ner.annotate import annotate
from spacy_bert_ner.annotate.options import AnnotateOptions

if __name__ == "__main__":
    pipeline, source, output, method = sys.argv[1:]
    multiprocessing.set_start_method(method, force=True)
    # The parent uses OpenMP threads before the workers start, as loading a large encoder does:
    # a forked worker running several torch threads then hangs in GNU libgomp.
    torch.set_num_threads(2)
    x = torch.ones(1000, 1000)
    (x @ x).sum()
    torch.ones(10**6).sin().sum()
    options = AnnotateOptions(n_process=2, batch_size=4)
    stats = annotate(spacy.load(pipeline), Path(source), Path(output), options)
    print("docs", stats.docs)
"""


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_n_process_2(nlp, pipeline_path, tmp_path, method):
    """`annotate --n-process 2` finishes (a hang fails after the timeout) under fork and spawn."""
    import os
    import subprocess
    import sys

    texts = [f"{TEXTS[i % 3]} {i}" for i in range(24)]
    source = write_lines(tmp_path / "in.txt", texts)
    script = tmp_path / "run.py"
    script.write_text(MULTIPROCESS_SCRIPT, encoding="utf8")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    output = tmp_path / "out.jsonl"
    args = [sys.executable, str(script), str(pipeline_path), str(source), str(output), method]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "docs 24" in done.stdout
    out = read_jsonl(output)
    assert [r["text"] for r in out] == texts
    annotate(nlp, source, tmp_path / "single.jsonl", AnnotateOptions(batch_size=4))
    assert [ents(r) for r in out] == [ents(r) for r in read_jsonl(tmp_path / "single.jsonl")]


def test_input_read_error_is_not_a_pipeline_failure(nlp, tmp_path, monkeypatch):
    """An error reading the input propagates; it is not retried as a pipeline failure and does
    not end the run as if the input were complete."""
    from spacy_bert_ner.annotate import reading

    source = write_lines(tmp_path / "in.txt", TEXTS)

    def unreadable(path):
        raise PermissionError(f"{path}: permission denied")

    monkeypatch.setattr(reading, "open_input", unreadable)
    with pytest.raises(PermissionError):
        annotate(nlp, source, tmp_path / "out.jsonl", AnnotateOptions(on_error="skip"))


def test_ray_driver_writes_lines_delivered_twice_once(tmp_path):
    """After a worker dies, Ray re-runs its batch, so rows the driver already wrote may come again:
    the Ray engine's driver loop (run here without Ray) writes each line once, counts the repeats,
    and counts the lines a restarted actor annotated."""
    from spacy_bert_ner.annotate.ray_engine import write_rows
    from spacy_bert_ner.annotate.writers import AnnotatedOutput, ResumableWriter

    source = write_lines(tmp_path / "in.txt", ["a", "b", "c", "d"])

    def row(line: int, restarted: bool = False, error: str = "") -> Dict[str, Any]:
        output = "" if error else json.dumps({"text": "abcd"[line - 1], "entities": []})
        return {"line": line, "output": output, "error": error, "restarted": restarted}

    rows = [row(1), row(2), row(1, True), row(2, True), row(3, True, "invalid JSON."), row(4, True)]
    writer = ResumableWriter(tmp_path / "out.jsonl", False, input_path=source)
    output = AnnotatedOutput(writer, chunk_size=2, on_error="skip")
    stats = output.run(lambda: write_rows(rows, output, source))
    assert [r["text"] for r in read_jsonl(tmp_path / "out.jsonl")] == ["a", "b", "d"]
    assert (stats.docs, stats.redelivered, stats.restarted_lines) == (3, 2, 2)
    assert [(e.line, e.reason) for e in stats.skipped] == [(3, "invalid JSON.")]
    # The progress record vouches for the whole input, the skipped line included.
    assert json.loads((tmp_path / "out.jsonl.progress").read_text())["line"] == 4


def test_both_writers_share_one_interface(tmp_path):
    """Each output format is an OutputWriter: the engines write through its two methods only."""
    pytest.importorskip("pyarrow")
    import pyarrow.parquet

    from spacy_bert_ner.annotate.outputs import Annotated
    from spacy_bert_ner.annotate.writers import OutputWriter, open_writer

    source = write_lines(tmp_path / "in.txt", ["x", "y"])
    chunk = [Annotated(2, json.dumps({"text": "y", "entities": []}))]
    for output_format in ("jsonl", "parquet"):
        path = tmp_path / f"out.{output_format}"
        writer = open_writer(source, path, AnnotateOptions(output_format=output_format))
        assert isinstance(writer, OutputWriter) and writer.resumed_after_line == 0
        writer.write(chunk, 2)
        writer.close()
    assert read_jsonl(tmp_path / "out.jsonl") == [{"text": "y", "entities": []}]
    rows = pyarrow.parquet.read_table(tmp_path / "out.parquet").to_pylist()
    assert [(r["line"], r["text"], r["entities"]) for r in rows] == [(2, "y", [])]
