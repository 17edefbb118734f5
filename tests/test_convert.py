import json
from pathlib import Path
from typing import List, Tuple

import pytest
import spacy
from spacy.tokens import DocBin
from synthetic import make_sentences, to_conll
from typer.testing import CliRunner

from spacy_bert_ner.cli import app
from spacy_bert_ner.convert import ConversionError, ConversionStats, conll_to_docs, convert

IOB2 = """-DOCSTART- -X- -X- O

John NNP B-NP B-PER
Smith NNP I-NP I-PER
visited VBD B-VP O
New NNP B-NP B-LOC
York NNP I-NP I-LOC
. . O O

Acme NNP B-NP B-ORG
Corp NNP I-NP I-ORG
grew VBD B-VP O
. . O O

-DOCSTART- -X- O O

Paris NNP B-NP B-LOC
Berlin NNP I-NP B-LOC
"""
# The same annotation in IOB1: entities start with I-, B- only separates adjacent same-type ones.
IOB1 = (
    IOB2.replace("B-PER", "I-PER")
    .replace("B-LOC\nYork", "I-LOC\nYork")
    .replace("B-ORG", "I-ORG")
    .replace("Paris NNP B-NP B-LOC", "Paris NNP B-NP I-LOC")
)
Ents = List[List[Tuple[str, str]]]


@pytest.fixture
def nlp() -> spacy.Language:
    return spacy.blank("en")


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf8")
    return path


def ents_of(docs) -> Ents:
    return [[(ent.text, ent.label_) for ent in doc.ents] for doc in docs]


EXPECTED_DOC1 = [("John Smith", "PER"), ("New York", "LOC"), ("Acme Corp", "ORG")]
EXPECTED_DOC2 = [("Paris", "LOC"), ("Berlin", "LOC")]


def test_conll_documents_sentences_and_entities(tmp_path, nlp):
    stats = ConversionStats()
    docs = list(conll_to_docs(write(tmp_path, "a.txt", IOB2), nlp, n_sents=10, stats=stats))
    # Both DOCSTART forms split documents; sentences stay whole within a Doc.
    assert ents_of(docs) == [EXPECTED_DOC1, EXPECTED_DOC2]
    assert [len(list(doc.sents)) for doc in docs] == [2, 1]
    assert [sent.text for sent in docs[0].sents] == [
        "John Smith visited New York .",
        "Acme Corp grew .",
    ]
    assert (stats.docs, stats.sentences, stats.tokens, stats.scheme) == (2, 3, 12, "iob2")
    assert stats.entities == {"PER": 1, "LOC": 3, "ORG": 1}
    assert not stats.repaired


def test_n_sents_groups_without_crossing_documents(tmp_path, nlp):
    path = write(tmp_path, "a.txt", IOB2)
    assert [len(d) for d in conll_to_docs(path, nlp, n_sents=1)] == [6, 4, 2]
    assert [len(d) for d in conll_to_docs(path, nlp, n_sents=0)] == [10, 2]


def test_iob1_detected_and_explicit(tmp_path, nlp):
    path = write(tmp_path, "iob1.txt", IOB1)
    stats = ConversionStats()
    assert ents_of(conll_to_docs(path, nlp, stats=stats)) == [EXPECTED_DOC1, EXPECTED_DOC2]
    assert stats.scheme == "iob1"
    # IOB1 -> IOB2 is a lossless conversion, reported as such, not a repair of broken data.
    assert stats.converted == {"IOB1 entity starts (I- after O or another type) written as B-": 4}
    assert not stats.repaired
    assert ents_of(conll_to_docs(path, nlp, scheme="iob1")) == [EXPECTED_DOC1, EXPECTED_DOC2]


def test_cli_reports_iob1_as_information(tmp_path):
    result = CliRunner().invoke(
        app, ["convert", str(write(tmp_path, "iob1.txt", IOB1)), str(tmp_path / "a.spacy")]
    )
    assert result.exit_code == 0, result.output
    assert "Converted to IOB2: IOB1 entity starts" in result.output
    assert "Repaired" not in result.output and "Nothing repaired or skipped" in result.output


def test_sentences_without_docstart_are_not_grouped(tmp_path, nlp):
    # Tweets (WNUT-17 style): no -DOCSTART-, so no document to group sentences by.
    text = "@paul O\nlikes O\nParis B-location\n\nhi O\n\nBerlin B-location\nrocks O\n"
    stats = ConversionStats()
    docs = list(conll_to_docs(write(tmp_path, "t.conll", text), nlp, n_sents=10, stats=stats))
    assert [doc.text.split() for doc in docs] == [
        ["@paul", "likes", "Paris"],
        ["hi"],
        ["Berlin", "rocks"],
    ]
    assert stats.grouped is False
    result = CliRunner().invoke(
        app, ["convert", str(tmp_path / "t.conll"), str(tmp_path / "t.spacy"), "-n", "10"]
    )
    assert "3 docs, 3 sentences" in result.output and "No -DOCSTART- lines" in result.output
    # With document marks, n_sents groups as before.
    stats = ConversionStats()
    assert (
        len(
            list(
                conll_to_docs(
                    write(tmp_path, "d.conll", "-DOCSTART- O\n\n" + text),
                    nlp,
                    n_sents=10,
                    stats=stats,
                )
            )
        )
        == 1
    )
    assert stats.grouped is True


def test_mixed_iob1_iob2_is_an_error(tmp_path, nlp):
    path = write(tmp_path, "mixed.txt", "A B-PER\nB O\nC I-LOC\n")
    with pytest.raises(ConversionError, match=r"mixed.txt:1: B-PER starts an entity after O"):
        list(conll_to_docs(path, nlp))


def test_stray_inside_tag_needs_repair(tmp_path, nlp):
    path = write(tmp_path, "stray.txt", "-DOCSTART- O\n\nA O\nB I-PER\nC I-PER\n")
    with pytest.raises(ConversionError, match=r"stray.txt:4: I-PER does not continue an entity"):
        list(conll_to_docs(path, nlp, scheme="iob2"))
    stats = ConversionStats()
    docs = list(conll_to_docs(path, nlp, scheme="iob2", repair=True, stats=stats))
    assert ents_of(docs) == [[("B C", "PER")]]
    assert stats.repaired == {"stray I- tag changed to B-": 1}


def test_two_column_tab_separated(tmp_path, nlp):
    text = "@paul\tO\nlikes\tO\nNew\tB-location\nYork\tI-location\n\nhi\tO\n"
    docs = list(conll_to_docs(write(tmp_path, "w.conll", text), nlp, n_sents=1))
    assert ents_of(docs) == [[("New York", "location")], []]


@pytest.mark.parametrize(
    "text,pattern",
    [
        ("A O\nB X-PER\n", r"bad.txt:2: invalid tag 'X-PER'"),
        ("A O\nB B-\n", r"bad.txt:2: invalid tag 'B-'"),
        ("A NN O O\nB NN O\n", r"bad.txt:2: malformed line: 3 columns, but line 1 has 4"),
        ("A NN O\n", r"bad.txt:1: unknown column layout: 3 columns"),
    ],
)
def test_bad_conll_lines_are_located(tmp_path, nlp, text, pattern):
    with pytest.raises(ConversionError, match=pattern):
        list(conll_to_docs(write(tmp_path, "bad.txt", text), nlp))


def test_non_utf8_and_empty_files(tmp_path, nlp):
    path = tmp_path / "latin1.txt"
    path.write_bytes("A O\nMünchen B-LOC\n".encode("latin1"))
    with pytest.raises(ConversionError, match=r"latin1.txt:2: not valid UTF-8 \(byte 0xfc"):
        list(conll_to_docs(path, nlp))
    with pytest.raises(ConversionError, match=r"empty.txt: the file is empty"):
        list(conll_to_docs(write(tmp_path, "empty.txt", "\n \n"), nlp))


def test_conll_round_trip_through_docbin(tmp_path, nlp):
    sentences = make_sentences(40, seed=3)
    docbin, stats = convert(write(tmp_path, "s.txt", to_conll(sentences)), nlp, n_sents=1)
    docs = list(DocBin().from_bytes(docbin.to_bytes()).get_docs(nlp.vocab))
    assert stats.docs == len(docs) == 40
    for doc, (words, spans) in zip(docs, sentences):
        assert [t.text for t in doc] == words
        assert [(e.start, e.end, e.label_) for e in doc.ents] == spans


JSONL_RECORDS = [
    {
        "text": "John Smith visited New York.",
        "spans": [
            {"start": 0, "end": 10, "label": "PER"},
            {"start": 19, "end": 27, "label": "LOC"},
        ],
    },
    {"text": "Acme Corp grew.", "label": [[0, 9, "ORG"]], "meta": {"id": 7}},
    {"text": "Nothing here."},
    # Newer doccano exports, and `annotate`'s output (extra keys are ignored).
    {
        "text": "Ann Lee left.",
        "entities": [{"id": 3, "start_offset": 0, "end_offset": 7, "label": "PER"}],
    },
    {"text": "In Oslo.", "entities": [{"start": 3, "end": 7, "label": "LOC", "score": 0.9}]},
]


def test_jsonl_both_span_variants(tmp_path, nlp):
    path = write(tmp_path, "a.jsonl", "\n".join(json.dumps(r) for r in JSONL_RECORDS) + "\n\n")
    docbin, stats = convert(path, nlp)
    docs = list(docbin.get_docs(nlp.vocab))
    assert ents_of(docs) == [
        [("John Smith", "PER"), ("New York", "LOC")],
        [("Acme Corp", "ORG")],
        [],
        [("Ann Lee", "PER")],
        [("Oslo", "LOC")],
    ]
    # Every token is annotated (O outside entities), so a doc with no spans teaches "no entity".
    assert all(doc.has_annotation("ENT_IOB") for doc in docs)
    assert (stats.docs, stats.entities) == (5, {"PER": 2, "LOC": 2, "ORG": 1})


@pytest.mark.parametrize(
    "line,pattern",
    [
        ('{"text": "abc"', r"bad.jsonl:2: invalid JSON"),
        ('{"spans": []}', r'bad.jsonl:2: expected a JSON object with a string "text"'),
        ('["text"]', r'bad.jsonl:2: expected a JSON object with a string "text"'),
        ('{"text": "New York", "spans": [{"start": 0, "label": "LOC"}]}', r"lacks the key 'end'"),
        (
            '{"text": "New York", "entities": [{"start_offset": 0, "label": "LOC"}]}',
            r"bad.jsonl:2: a span in \"entities\" lacks the key 'end_offset'",
        ),
        (
            '{"text": "New York", "spans": [], "label": [[0, 8, "LOC"]]}',
            r"bad.jsonl:2: the record has both 'spans' and 'label'",
        ),
        ('{"text": "New York", "entities": {"0": 1}}', r'"entities" must be a list of objects'),
        ('{"text": "New York", "label": [[0, 30, "LOC"]]}', r"ends past the text"),
        ('{"text": "New York", "label": [[3, 3, "LOC"]]}', r"needs 0 <= start < end"),
        (
            '{"text": "New York City", "label": [[0, 8, "LOC"], [4, 13, "LOC"]]}',
            r"bad.jsonl:2: span \[4, 13\] \(LOC\) overlaps 'New York'",
        ),
        ('{"text": "New York", "label": [[0, 6, "LOC"]]}', r"bad.jsonl:2: span \[0, 6\] 'New Yo'"),
    ],
)
def test_bad_jsonl_records_are_located(tmp_path, nlp, line, pattern):
    path = write(tmp_path, "bad.jsonl", '{"text": "fine"}\n' + line + "\n")
    with pytest.raises(ConversionError, match=pattern):
        convert(path, nlp)


def test_jsonl_misaligned_span_repair_is_counted(tmp_path, nlp):
    path = write(tmp_path, "a.jsonl", '{"text": "New York", "label": [[0, 6, "LOC"]]}\n')
    docbin, stats = convert(path, nlp, repair=True)
    assert ents_of(docbin.get_docs(nlp.vocab)) == [[("New York", "LOC")]]
    assert stats.repaired == {"span widened to token boundaries": 1}


def test_cli_prints_counts_and_fails_cleanly(tmp_path):
    runner = CliRunner()
    output = tmp_path / "out" / "a.spacy"
    result = runner.invoke(app, ["convert", str(write(tmp_path, "a.txt", IOB2)), str(output)])
    assert result.exit_code == 0, result.output
    assert "2 docs, 3 sentences, 12 tokens, 5 entities" in result.output
    assert "LOC" in result.output and "Nothing repaired or skipped" in result.output
    assert len(DocBin().from_disk(output)) == 2
    bad = write(tmp_path, "bad.txt", "A O\nB Q-PER\n")
    result = runner.invoke(app, ["convert", str(bad), str(tmp_path / "b.spacy")])
    assert result.exit_code == 1
    assert "bad.txt:2: invalid tag 'Q-PER'" in result.output
    assert not (tmp_path / "b.spacy").exists()


def test_cli_refuses_odd_settings(tmp_path):
    """A negative --n-sents, an output spaCy's corpus reader would not read (not .spacy) and a tag
    whose label ends in a hyphen stop with a reason, writing nothing."""
    runner = CliRunner()
    source = str(write(tmp_path, "a.txt", IOB2))
    result = runner.invoke(app, ["convert", source, str(tmp_path / "a.spacy"), "--n-sents", "-1"])
    assert (
        result.exit_code == 1 and "--n-sents must be 0 (whole documents) or more" in result.output
    )
    result = runner.invoke(app, ["convert", source, str(tmp_path / "a.txt.out")])
    assert result.exit_code == 1 and "needs the .spacy suffix" in result.output
    assert not (tmp_path / "a.spacy").exists() and not (tmp_path / "a.txt.out").exists()
    bad = write(tmp_path, "bad.txt", "A O\nB B-FOO-\n")
    with pytest.raises(ConversionError, match=r"bad.txt:2: invalid tag 'B-FOO-'"):
        convert(bad, spacy.blank("en"))
    hyphenated = write(tmp_path, "ok.txt", "Dune B-creative-work\n")
    docbin, _ = convert(hyphenated, spacy.blank("en"))
    assert ents_of(docbin.get_docs(spacy.blank("en").vocab)) == [[("Dune", "creative-work")]]
