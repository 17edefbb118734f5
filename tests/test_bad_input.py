"""`convert`, `package-meta` and `analyze` under bad input and ordinary mistakes: one-line messages
naming the problem, never a traceback; and a hypothesis fuzz test of `convert` and `annotate`."""

import gzip
import json
import os
import shutil
from pathlib import Path
from typing import Any, List

import pytest
import spacy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spacy.tokens import DocBin
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


def test_package_meta_bad_meta(tmp_path, pipeline_path):
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
    assert (
        result.exit_code == 1
        and "config.cfg: missing; expected a trained pipeline" in result.output
    )
    shutil.copy(pipeline_path / "config.cfg", model / "config.cfg")
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


@pytest.mark.parametrize(
    "line,pattern",
    [
        # A JSON escape of half a surrogate pair decodes to no character, which no UTF-8 file holds.
        ('{"text": "a \\ud800 b"}', r'x.jsonl:2: the "text" has a lone surrogate \'\\ud800\''),
        (
            '{"text": "a b", "spans": [{"start": 0, "end": 1, "label": "\\udc80"}]}',
            r"x.jsonl:2: the label of span \[0, 1\] has a lone surrogate",
        ),
        ("[" * 100_000 + "]" * 100_000, r"x.jsonl:2: the JSON is nested too deeply"),
        (
            '{"text": "x", "meta": ' + '{"a": ' * 100_000 + "1" + "}" * 100_001,
            r"x.jsonl:2: the JSON is nested too deeply",
        ),
        (
            '{"text": "Paris", "spans": [{"start": 0, "end": 5, "label": "LOC\\u00a0"}]}',
            r"x.jsonl:2: invalid label 'LOC\\xa0' on span \[0, 5\] \(it ends in U\+00A0 NO-BREAK",
        ),
        (
            '{"text": "Paris", "spans": [{"start": 0, "end": 5, "label": "O"}]}',
            r"x.jsonl:2: the entity label 'O' is not an entity type",
        ),
    ],
)
def test_jsonl_encoding_nesting_and_labels_are_located(tmp_path, line, pattern):
    """Every bad record is named by file and line, with invisible characters escaped and named:
    a lone surrogate (it failed when the DocBin was written, naming nothing), 100,000 levels of
    nesting (a RecursionError), a label with a no-break space, the label O."""
    path = tmp_path / "x.jsonl"
    path.write_text('{"text": "fine"}\n' + line + "\n", encoding="utf8")
    with pytest.raises(ConversionError, match=pattern):
        words_and_ents(path)
    result = invoke("convert", path, tmp_path / "x.spacy")
    assert result.exit_code == 1 and "x.jsonl:2:" in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "x.spacy").exists()


@pytest.mark.parametrize(
    "text,pattern",
    [
        # An NBSP inside a word splits the columns as a space does: named, and shown escaped.
        (
            "New\u00a0York B-LOC\n",
            r"x.conll:1: unknown column layout: 3 columns in 'New\\xa0York B-LOC' \(U\+00A0 "
            r"NO-BREAK SPACE at column 4\)",
        ),
        (
            "John NNP B-NP B-PER\nNew\u00a0York NNP B-NP B-LOC\n",
            r"x.conll:2: malformed line: 5 columns, but line 1 has 4: 'New\\xa0York NNP B-NP "
            r"B-LOC' \(U\+00A0 NO-BREAK SPACE at column 4\)",
        ),
        # A trailing tab makes an empty last column.
        (
            "John\tB-PER\nSmith\tI-PER\t\n",
            r"x.conll:2: malformed line: 3 columns, but line 1 has 2: 'Smith\\tI-PER\\t' \(it "
            r"ends in a tab\)",
        ),
        ("John\t\n", r"x.conll:1: invalid tag '' in 'John\\t' \(it ends in a tab\)"),
        (
            "John B-PER\u200b\n",
            r"x.conll:1: the entity label 'PER\\u200b' has a character nobody sees \(U\+200B "
            r"ZERO WIDTH SPACE at column 4\)",
        ),
        ("John B-O\nSmith I-O\n", r"x.conll:1: the entity label 'O' is not an entity type"),
    ],
)
def test_conll_invisible_characters_and_label_o_are_named(tmp_path, text, pattern):
    path = tmp_path / "x.conll"
    path.write_text(text, encoding="utf8")
    with pytest.raises(ConversionError, match=pattern):
        words_and_ents(path)


def test_labels_differing_in_case_are_warned_about(tmp_path):
    """`PER` beside `per` trains two entity types: the CLI warns, naming where each was first."""
    path = tmp_path / "x.conll"
    path.write_text("John B-PER\nsaw O\n\nAnn B-per\n\nBob B-PER\n\nEve B-Per\n", encoding="utf8")
    result = invoke("convert", path, tmp_path / "x.spacy")
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "x.conll:4: the label 'per' differs from 'PER' (first at " in output
    assert "x.conll:1) only in case" in output
    assert "x.conll:8: the label 'Per' differs from 'PER'" in output
    assert output.count("differs from") == 2
    jsonl = tmp_path / "y.jsonl"
    records = [
        {"text": "Ann", "spans": [{"start": 0, "end": 3, "label": label}]}
        for label in ("LOC", "loc")
    ]
    jsonl.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf8")
    result = invoke("convert", jsonl, tmp_path / "y.spacy")
    assert result.exit_code == 0, result.output
    assert "y.jsonl:2: the label 'loc' differs from 'LOC'" in " ".join(result.output.split())


# --- Fuzzing: random bytes, JSONL records and CoNLL lines --------------------------------------

# A few dozen fixed examples in CI; FUZZ_EXAMPLES=500 searches longer, with fresh random examples.
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES or 25,
    deadline=None,
    derandomize=not FUZZ_EXAMPLES,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
NUMBER = st.one_of(st.integers(-3, 40), st.floats(-1, 40), st.booleans(), st.none(), TEXT)
SPAN = st.fixed_dictionaries(
    {"start": NUMBER, "end": NUMBER, "label": st.one_of(st.sampled_from(["PER", "LOC"]), TEXT)}
)
JSONL_RECORD = st.one_of(
    st.fixed_dictionaries({"text": TEXT, "spans": st.lists(SPAN, max_size=3)}),
    st.fixed_dictionaries(
        {"text": TEXT, "label": st.lists(st.tuples(NUMBER, NUMBER, TEXT), max_size=3)}
    ),
    st.dictionaries(TEXT, st.one_of(TEXT, NUMBER), max_size=3),
)
JSONL_LINE = st.one_of(
    JSONL_RECORD.map(json.dumps),
    st.just('{"text": "a \\ud800 b"}'),
    st.just('{"text": "a b", "spans": [{"start": 0, "end": 1, "label": "\\udc80"}]}'),
    TEXT,
)
CONLL_LINE = st.one_of(
    st.just(""),
    st.just("-DOCSTART- -X- -X- O"),
    st.builds(
        lambda word, tag, sep, n: sep.join([word] * (n - 1) + [tag]),
        st.one_of(st.sampled_from(["John", "EU", "."]), TEXT),
        st.one_of(st.sampled_from(["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-", "B-"]), TEXT),
        st.sampled_from([" ", "\t", "  "]),
        st.sampled_from([1, 2, 3, 4]),
    ),
)


def assert_clean(result: Any) -> None:
    """Exit 0, or 1 with our message; never an exception escaping the command."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code in (0, 1), result.output
    assert "Traceback" not in result.output
    if result.exit_code == 1:
        assert result.output.strip(), "failed without saying why"


@FUZZ
@given(data=st.one_of(st.binary(max_size=200), st.binary(max_size=60).map(gzip.compress)))
def test_fuzz_convert_random_bytes(tmp_path, data):
    for name in ("x.conll", "x.jsonl"):
        (tmp_path / name).write_bytes(data)
        assert_clean(invoke("convert", tmp_path / name, tmp_path / "x.spacy"))


@FUZZ
@given(lines=st.lists(JSONL_LINE, max_size=6))
def test_fuzz_convert_jsonl_records(tmp_path, lines):
    path = tmp_path / "x.jsonl"
    path.write_text("\n".join(lines), encoding="utf8")
    result = invoke("convert", path, tmp_path / "x.spacy", "--repair")
    assert_clean(result)


@FUZZ
@given(lines=st.lists(CONLL_LINE, max_size=12), repair=st.booleans())
def test_fuzz_convert_conll_lines(tmp_path, lines, repair):
    path = tmp_path / "x.conll"
    path.write_text("\n".join(lines), encoding="utf8")
    options = ["--repair", "--scheme", "iob2"] if repair else []
    result = invoke("convert", path, tmp_path / "x.spacy", *options)
    assert_clean(result)
    if result.exit_code == 0:
        assert len(DocBin().from_disk(tmp_path / "x.spacy")) >= 1


def good_record(number: int, raw: bytes) -> Any:
    """The oracle: what annotate must output for a JSONL line (None: nothing, False: skipped)."""
    try:
        text = raw.decode("utf8")
    except UnicodeDecodeError:
        return False
    if number == 1:
        text = text.lstrip("\ufeff")
    if not text.strip():
        return None
    try:
        data = json.loads(text)
        json.dumps(data, ensure_ascii=False).encode("utf8")
    except (ValueError, UnicodeEncodeError):
        return False
    return data if isinstance(data, dict) and isinstance(data.get("text"), str) else False


ANNOTATE_LINE = st.one_of(
    st.builds(lambda t, i: json.dumps({"text": t, "id": i}), TEXT, st.integers()).map(str.encode),
    JSONL_LINE.map(lambda s: s.encode("utf8", "surrogatepass")),
    st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")),
)


@pytest.fixture(scope="module")
def cached_load(pipeline_path: Path) -> Any:
    nlp = spacy.load(pipeline_path)
    return lambda name, quantized=False: nlp


@FUZZ
@given(lines=st.lists(ANNOTATE_LINE, max_size=8), batch_size=st.sampled_from([1, 3, 64]))
def test_fuzz_annotate_skip_keeps_every_good_line_once(
    tmp_path, monkeypatch, cached_load, lines, batch_size
):
    monkeypatch.setattr("spacy_bert_ner.inference.load", cached_load)
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    output = tmp_path / "out.jsonl"
    args = ["annotate", "x", source, output, "--on-error", "skip", "--overwrite"]
    result = invoke(*args, "--batch-size", batch_size)
    assert_clean(result)
    if source.read_bytes()[:2] == b"\x1f\x8b":  # read as (broken) gzip
        return
    assert result.exit_code == 0, result.output
    expected = [good_record(n, raw) for n, raw in enumerate(lines, start=1)]
    # Split at "\n" only: str.splitlines would also split at U+0085 or U+2028 inside a text.
    written = [json.loads(line) for line in output.read_text(encoding="utf8").split("\n")[:-1]]
    assert [{k: v for k, v in r.items() if k != "entities"} for r in written] == [
        r for r in expected if r
    ]
    skipped = sum(r is False for r in expected)
    assert f"skipped {skipped} bad records" in " ".join(result.output.split())
    # Plain text: every line but the undecodable ones is a record.
    result = invoke(*args, "--format", "text")
    assert_clean(result)
    assert result.exit_code == 0, result.output
