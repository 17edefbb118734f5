import gzip
import json
from pathlib import Path
from typing import Any, Dict, List

import pytest
import spacy
from spacy.language import Language
from typer.testing import CliRunner

from spacy_bert_ner.annotate import RecordError, annotate, input_format
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
    stats = annotate(nlp, source, tmp_path / "out.jsonl", batch_size=2)
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
    stats = annotate(nlp, bad_input(tmp_path), tmp_path / "out.jsonl", on_error="skip")
    assert [(e.line, e.reason.split(":")[0].split(" (")[0]) for e in stats.skipped] == [
        (2, "invalid JSON"),
        (3, 'expected a JSON object with a string "text" field.'),
        (4, "not valid UTF-8"),
    ]
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
        annotate(nlp, source, output, batch_size=4, progress=interrupt)
    # A half-written line at the end, as a kill during a write would leave.
    with open(output, "a", encoding="utf8") as f:
        f.write('{"text": "partial')
    assert len(output.read_text().splitlines()) == 9
    stats = annotate(nlp, source, output, batch_size=4, resume=True)
    assert stats.resumed_after_line == 8
    out = read_jsonl(output)
    assert [r["text"] for r in out] == texts
    uninterrupted = tmp_path / "full.jsonl"
    annotate(nlp, source, uninterrupted, batch_size=4)
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
    result = CliRunner().invoke(app, ["annotate", str(pipeline_path), str(bad), str(output)])
    assert result.exit_code == 1
    assert "bad.jsonl:2: invalid JSON" in result.output and "--on-error skip" in result.output
    skip = ["annotate", str(pipeline_path), str(bad), str(output), "--on-error", "skip"]
    result = CliRunner().invoke(app, skip)
    assert result.exit_code == 0, result.output
    assert (
        "skipped 3 bad records" in result.output and "bad.jsonl:4: not valid UTF-8" in result.output
    )
