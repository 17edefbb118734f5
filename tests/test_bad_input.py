"""`convert`, `package-meta` and `analyze` under bad input and ordinary mistakes: one-line messages
naming the problem, never a traceback; and a hypothesis fuzz test of `convert` and `annotate`."""

import gzip
import json
from pathlib import Path
from typing import Any, List

import pytest
import spacy
from typer.testing import CliRunner

from spacy_bert_ner.cli import app
from spacy_bert_ner.convert import ConversionError, convert

CONLL = "-DOCSTART- -X- -X- O\n\nJohn NNP B-NP B-PER\nvisited VBD B-VP O\nEU NNP B-NP B-ORG\n"


def invoke(*args: Any) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


def words_and_ents(path: Path) -> List[Any]:
    nlp = spacy.blank("en")
    docbin, _ = convert(path, nlp)
    return [
        ([t.text for t in d], [(e.text, e.label_) for e in d.ents])
        for d in docbin.get_docs(nlp.vocab)
    ]


def test_conll_byte_order_mark(tmp_path):
    path = tmp_path / "bom.conll"
    path.write_bytes(b"\xef\xbb\xbf" + CONLL.encode("utf8"))
    assert words_and_ents(path) == [(["John", "visited", "EU"], [("John", "PER"), ("EU", "ORG")])]
    path.write_bytes(b"\xef\xbb\xbf" + CONLL.split("\n\n")[1].encode("utf8"))  # before a word
    assert words_and_ents(path)[0][0][0] == "John"


def test_gzipped_input_is_read(tmp_path):
    path = tmp_path / "train.conll.gz"
    path.write_bytes(gzip.compress(CONLL.encode("utf8")))
    assert words_and_ents(path) == [(["John", "visited", "EU"], [("John", "PER"), ("EU", "ORG")])]
    jsonl = tmp_path / "train.jsonl.gz"
    record = {"text": "John visited EU", "spans": [{"start": 0, "end": 4, "label": "PER"}]}
    jsonl.write_bytes(gzip.compress(json.dumps(record).encode("utf8")))
    assert words_and_ents(jsonl) == [(["John", "visited", "EU"], [("John", "PER")])]
    truncated = tmp_path / "cut.conll.gz"
    truncated.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(ConversionError, match="cut.conll.gz: the gzip file is truncated"):
        words_and_ents(truncated)


@pytest.mark.parametrize(
    "text,pattern",
    [
        (
            "-DOCSTART- -X- -X- O\n\n-DOCSTART- -X- -X- O\n",
            "no tokens: the file has only -DOCSTART-",
        ),
        ("John\tB-PER\n\tO\n", r"x.conll:2: empty word in the first column"),
    ],
)
def test_conll_without_tokens_or_words(tmp_path, text, pattern):
    path = tmp_path / "x.conll"
    path.write_text(text, encoding="utf8")
    with pytest.raises(ConversionError, match=pattern):
        words_and_ents(path)
    result = invoke("convert", path, tmp_path / "x.spacy")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert not (tmp_path / "x.spacy").exists()


@pytest.mark.parametrize(
    "span,pattern",
    [
        (
            {"start": 4, "end": 5, "label": "X"},
            r"x.jsonl:1: span \[4, 5\] \(X\) covers only whitespace",
        ),
        (
            {"start": 0.0, "end": 4, "label": "X"},
            r"x.jsonl:1: span \[0.0, 4\]: start and end must be whole",
        ),
        ({"start": True, "end": 4, "label": "X"}, "must be whole numbers"),
    ],
)
def test_jsonl_span_offsets(tmp_path, span, pattern):
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"text": "John visited EU", "spans": [span]}), encoding="utf8")
    with pytest.raises(ConversionError, match=pattern):
        words_and_ents(path)


def test_unwritable_output_is_one_line(tmp_path):
    source = tmp_path / "x.conll"
    source.write_text(CONLL, encoding="utf8")
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = invoke("convert", source, blocker / "x.spacy")
    assert result.exit_code == 1 and "cannot write the output" in result.output
    assert not isinstance(result.exception, OSError)


def test_package_meta_bad_meta(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    metrics = tmp_path / "metrics.json"
    metrics.write_text('{"ents_f": 0.9}')
    args = ["package-meta", model, metrics, tmp_path / "out.json", "--name", "n", "--version", "1"]
    result = invoke(*args)
    assert result.exit_code == 1 and "meta.json: missing" in result.output
    (model / "meta.json").write_text("{broken")
    result = invoke(*args)
    assert result.exit_code == 1 and "meta.json: not valid JSON" in result.output
    (model / "meta.json").write_text("[1, 2]")
    result = invoke(*args)
    assert result.exit_code == 1 and "as a JSON object, not list" in result.output
    (model / "meta.json").write_text('{"lang": "en", "performance": null}')
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out.json").read_text())["performance"] == {"ents_f": 0.9}


def test_analyze_has_the_flags_its_messages_suggest(pipeline_path, tmp_path):
    data = tmp_path / "stray.conll"
    data.write_text("john B-PER\nsmith I-PER\nvisited O\nparis I-LOC\n", encoding="utf8")
    result = invoke("analyze", pipeline_path, data, tmp_path / "out")
    assert result.exit_code == 1 and "Pass --scheme iob2 --repair" in result.output
    result = invoke(
        "analyze", pipeline_path, data, tmp_path / "out", "--scheme", "iob2", "--repair"
    )
    assert result.exit_code == 0, result.output
    result = invoke("analyze", "en_no_such_pipeline", data, tmp_path / "out")
    assert result.exit_code == 1 and "Can't load the pipeline" in result.output
