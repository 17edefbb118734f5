import json
import os
from functools import partial
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


# --- Bounded memory: streaming input, a directory of .spacy shards -----------------------------


def docs_of(path: Path, nlp) -> List[Tuple[List[str], List[Tuple[int, int, str]], List[int]]]:
    """Words, entities and sentence starts of every doc of a .spacy file or a directory of them,
    read as spaCy's corpus reader reads them."""
    from spacy.training import Corpus

    return [
        (
            [t.text for t in eg.reference],
            [(e.start, e.end, e.label_) for e in eg.reference.ents],
            [t.i for t in eg.reference if t.is_sent_start],
        )
        for eg in Corpus(str(path))(nlp)
    ]


@pytest.mark.parametrize("n_sents", [1, 3, 0])
def test_directory_output_is_the_same_corpus_in_shards(tmp_path, nlp, n_sents):
    """A path without suffix gets a directory of .spacy shards of about --shard-size tokens,
    which spaCy's Corpus reads as the same docs, in the same order, as the one-file output."""
    text = to_conll(make_sentences(60, seed=1))
    text += "-DOCSTART- -X- -X- O\n\n" + to_conll(make_sentences(30, seed=2)).split("\n\n", 1)[1]
    source = write(tmp_path, "s.txt", text)
    args = ["convert", str(source), "--n-sents", str(n_sents)]
    result = CliRunner().invoke(app, [*args[:2], str(tmp_path / "one.spacy"), *args[2:]])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(
        app,
        [*args[:2], str(tmp_path / "shards"), *args[2:]]
        + [
            "--shard-size",
            "50",
        ],
    )
    assert result.exit_code == 0, result.output
    shards = sorted(p.name for p in (tmp_path / "shards").iterdir())
    assert len(shards) > 1 and shards[:2] == ["00000.spacy", "00001.spacy"]
    assert f"in {len(shards)} .spacy files" in " ".join(result.output.split())
    one = docs_of(tmp_path / "one.spacy", nlp)
    assert docs_of(tmp_path / "shards", nlp) == one and len(one) > 1
    sizes = [len(DocBin().from_disk(tmp_path / "shards" / name)) for name in shards]
    tokens = [
        sum(map(len, DocBin().from_disk(tmp_path / "shards" / n).get_docs(nlp.vocab)))
        for n in shards
    ]
    assert sum(sizes) == len(one) and min(tokens[:-1]) >= 50
    # A second run replaces the first one's shards (none left over to mix in).
    result = CliRunner().invoke(app, ["convert", str(source), str(tmp_path / "shards")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["00000.spacy"]


def test_failed_conversion_leaves_no_output_and_keeps_the_previous(tmp_path):
    """An error half-way through writes nothing: no shard, no temporary left in the folder, and a
    previous output stays as it was; a directory with other files in it is refused."""
    runner = CliRunner()
    good = write(tmp_path, "good.txt", to_conll(make_sentences(40, seed=3)))
    bad = write(tmp_path, "bad.txt", to_conll(make_sentences(40, seed=3)) + "A B C\n")
    result = runner.invoke(app, ["convert", str(bad), str(tmp_path / "out"), "--shard-size", "9"])
    assert result.exit_code == 1 and "bad.txt:" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.txt", "good.txt"]
    assert runner.invoke(app, ["convert", str(good), str(tmp_path / "out")]).exit_code == 0
    before = (tmp_path / "out" / "00000.spacy").read_bytes()
    result = runner.invoke(app, ["convert", str(bad), str(tmp_path / "out")])
    assert result.exit_code == 1
    assert (tmp_path / "out" / "00000.spacy").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    (tmp_path / "out" / "notes.txt").write_text("mine")
    result = runner.invoke(app, ["convert", str(good), str(tmp_path / "out")])
    assert result.exit_code == 1 and "holds other files than .spacy shards" in result.output


def test_conll_from_a_fifo_without_docstart(tmp_path, nlp):
    """A pipe is read once, completely (it is copied aside, since a file without -DOCSTART- lines
    is read twice): every sentence, each its own doc."""
    import threading

    text = "\n\n".join(f"w{i} B-PER\nx O" for i in range(500)) + "\n"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text(text, encoding="utf8"))
    writer.start()
    result = CliRunner().invoke(app, ["convert", str(fifo), str(tmp_path / "f.spacy")])
    writer.join()
    assert result.exit_code == 0, result.output
    assert "500 docs, 500 sentences, 1000 tokens, 500 entities" in result.output


def peak_memory(run) -> int:
    import gc
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("file_format", ["conll", "jsonl"])
def test_convert_memory_does_not_grow_with_the_input(tmp_path, file_format):
    """Converting to a directory of shards holds one shard and the line being read: four times
    the input, the same peak (the whole file, its tokens and all its docs were held before)."""
    sentences = make_sentences(100, seed=5)
    if file_format == "conll":
        chunk = to_conll(sentences).split("\n\n", 1)[1]
        make = lambda n: "-DOCSTART- -X- -X- O\n\n" + chunk * n  # noqa: E731
    else:
        records = [
            json.dumps(
                {
                    "text": " ".join(words),
                    "spans": [
                        {
                            "start": len(" ".join(words[:s])) + bool(s),
                            "end": len(" ".join(words[:e])),
                            "label": label,
                        }
                        for s, e, label in spans
                    ],
                }
            )
            for words, spans in sentences
        ]
        make = lambda n: "\n".join(records * n) + "\n"  # noqa: E731
    peaks = []
    for n in (1, 5, 20):  # the first run (imports, caches) unmeasured
        source = write(tmp_path, f"in{n}.{file_format}", make(n))
        output = tmp_path / f"out{n}"
        args = ["convert", str(source), str(output), "--shard-size", "2000", "-n", "10"]
        peaks.append(peak_memory(partial(CliRunner().invoke, app, args, catch_exceptions=False)))
        assert len(list(output.iterdir())) >= n // 2
    assert peaks[2] < 1.2 * peaks[1], peaks
