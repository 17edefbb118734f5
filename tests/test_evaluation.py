"""The conlleval-style scorer, the error classification and the `analyze` command."""

import json
from pathlib import Path
from typing import List, Tuple

import pytest
import spacy
from hypothesis import given, settings
from hypothesis import strategies as st
from spacy.scorer import Scorer
from spacy.tokens import Doc, DocBin, Span, SpanGroup
from spacy.training import Example
from synthetic import make_examples
from typer.testing import CliRunner

from spacy_bert_ner.cli import app
from spacy_bert_ner.evaluation.analysis import entity_scores
from spacy_bert_ner.evaluation.corpus import predict_corpus
from spacy_bert_ner.evaluation.error_kinds import EntityError, classify_errors, compare
from spacy_bert_ner.evaluation.errors_page import errors_html
from spacy_bert_ner.scorer import doc_spans, score_docs, score_ents, score_spans

WORDS = ["Angela", "Merkel", "met", "Emmanuel", "Macron", "in", "New", "York", "City", "today", "."]


def make_doc(ents: List[Tuple[int, int, str]]) -> Doc:
    doc = Doc(spacy.blank("en").vocab, words=WORDS, sent_starts=[True] + [False] * 10)
    doc.ents = [Span(doc, s, e, label) for s, e, label in ents]
    return doc


def test_score_spans_counts_exact_matches_only() -> None:
    gold = [[(0, 2, "PER"), (3, 5, "PER"), (6, 9, "LOC")], []]
    pred = [[(0, 2, "PER"), (3, 5, "ORG"), (6, 8, "LOC")], [(1, 2, "MISC")]]
    scores = score_spans(gold, pred)
    assert (scores["tp"], scores["n_pred"], scores["n_gold"]) == (1, 4, 3)
    assert scores["p"] == 25.0 and scores["r"] == 33.33 and scores["f"] == 28.57
    assert scores["per_type"]["PER"] == {
        "p": 100.0,
        "r": 50.0,
        "f": 66.67,
        "tp": 1,
        "n_pred": 1,
        "n_gold": 2,
    }
    assert scores["per_type"]["MISC"]["n_gold"] == 0 and scores["per_type"]["MISC"]["f"] == 0.0
    assert scores["n_docs"] == 2


def test_score_spans_needs_one_prediction_per_doc() -> None:
    with pytest.raises(ValueError, match="2 gold documents but 1 predicted"):
        score_spans([[], []], [[]])


def corrupted(examples: List[Example]) -> List[Doc]:
    """Predictions that drop, relabel or shift some of the examples' gold entities."""
    predictions = []
    for i, example in enumerate(examples):
        doc = example.reference.copy()
        ents = list(doc.ents)
        if i % 4 == 0 and ents:
            ents = ents[1:]
        elif i % 4 == 1 and ents:
            ents[0] = Span(doc, ents[0].start, ents[0].end, "MISC")
        elif i % 4 == 2 and ents and ents[-1].end < len(doc):
            ents[-1] = Span(doc, ents[-1].start, ents[-1].end + 1, ents[-1].label_)
        doc.ents = ents
        predictions.append(doc)
    return predictions


def test_the_one_f1_is_spacys_on_real_predictions() -> None:
    nlp = spacy.blank("en")
    gold = [eg.reference for eg in make_examples(nlp, 40, 3)]
    pred = corrupted(make_examples(nlp, 40, 3))
    ours = score_docs(gold, pred)
    examples = [Example(p, g) for p, g in zip(pred, gold)]
    # The registered scorer, and spaCy's generic span scorer as a second opinion.
    for theirs in (score_ents(examples), Scorer.score_spans(examples, "ents")):
        assert 0 < ours["f"] < 100
        assert ours["f"] == round(100 * theirs["ents_f"], 2)
        assert (ours["p"], ours["r"]) == (
            round(100 * theirs["ents_p"], 2),
            round(100 * theirs["ents_r"], 2),
        )
        assert set(ours["per_type"]) == set(theirs["ents_per_type"])
        for label, prf in theirs["ents_per_type"].items():
            assert [ours["per_type"][label][k] for k in "prf"] == [
                round(100 * prf[k], 2) for k in "prf"
            ]
    # The counts behind the rates.
    gold_set = {(i, *span) for i, doc in enumerate(gold) for span in doc_spans(doc)}
    pred_set = {(i, *span) for i, doc in enumerate(pred) for span in doc_spans(doc)}
    assert (ours["tp"], ours["n_pred"], ours["n_gold"]) == (
        len(gold_set & pred_set),
        len(pred_set),
        len(gold_set),
    )


entity_lists = st.lists(
    st.lists(st.tuples(st.integers(0, 3), st.integers(1, 3), st.sampled_from("AB")), max_size=4),
    max_size=4,
)


def non_overlapping(spans: List[Tuple[int, int, int]]) -> List[Tuple[int, int, str]]:
    """(gap, length, label) triples laid end to end as (start, end, label) entities."""
    entities, end = [], 0
    for gap, length, label in spans:
        entities.append((end + gap, end + gap + length, label))
        end += gap + length
    return entities


@settings(max_examples=200, deadline=None)
@given(gold=entity_lists, pred=entity_lists)
def test_score_spans_is_conlleval(gold, pred) -> None:  # type: ignore[no-untyped-def]
    """Exact-match P/R/F from counts made here, on any entities (of as many documents)."""
    n = min(len(gold), len(pred))
    gold_docs = [non_overlapping(doc) for doc in gold[:n]]
    pred_docs = [non_overlapping(doc) for doc in pred[:n]]
    scores = score_spans(gold_docs, pred_docs)
    for label in (None, "A", "B"):
        g = {(i, *e) for i, doc in enumerate(gold_docs) for e in doc if label in (None, e[2])}
        p = {(i, *e) for i, doc in enumerate(pred_docs) for e in doc if label in (None, e[2])}
        if label is not None and not g and not p:
            assert label not in scores["per_type"]
            continue
        row = scores if label is None else scores["per_type"][label]
        tp = len(g & p)
        precision, recall = (tp / len(p) if p else 0.0), (tp / len(g) if g else 0.0)
        f = 2 * precision * recall / (precision + recall) if tp else 0.0
        assert (row["tp"], row["n_pred"], row["n_gold"]) == (tp, len(p), len(g))
        assert row["p"] == round(100 * precision, 2) and row["r"] == round(100 * recall, 2)
        assert row["f"] == pytest.approx(round(100 * f, 2), abs=1e-9)
    assert scores["n_docs"] == n


def test_gold_without_entity_annotation_means_no_entities() -> None:
    """spaCy skips a reference that has no entity annotation at all; gold data has none there,
    so a prediction on it is spurious."""
    vocab = spacy.blank("en").vocab
    gold = [Doc(vocab, words=WORDS), make_doc([(0, 2, "PER")])]
    assert not gold[0].has_annotation("ENT_IOB")
    pred = [make_doc([(9, 10, "MISC")]), make_doc([(0, 2, "PER")])]
    scores = score_docs(gold, pred)
    assert (scores["tp"], scores["n_pred"], scores["n_gold"]) == (1, 2, 1)
    assert scores["p"] == 50.0 and scores["per_type"]["MISC"]["n_pred"] == 1


def test_predict_corpus_sees_the_words_only() -> None:
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    gold = [make_doc([(0, 2, "PER")])]
    (pred,) = predict_corpus(nlp, gold)
    assert [t.text for t in pred] == WORDS and not pred.ents
    assert pred.has_annotation("SENT_START")  # the pipeline ran


@pytest.mark.parametrize(
    "gold,pred,expected",
    [
        ([(0, 2, "PER")], [(0, 2, "ORG")], [EntityError("type", (0, 2, "PER"), (0, 2, "ORG"))]),
        ([(6, 9, "LOC")], [(6, 8, "LOC")], [EntityError("boundary", (6, 9, "LOC"), (6, 8, "LOC"))]),
        (
            [(6, 9, "LOC")],
            [(7, 9, "ORG")],
            [EntityError("boundary+type", (6, 9, "LOC"), (7, 9, "ORG"))],
        ),
        ([(3, 5, "PER")], [], [EntityError("missed", (3, 5, "PER"), None)]),
        ([], [(9, 10, "MISC")], [EntityError("spurious", None, (9, 10, "MISC"))]),
        ([(0, 2, "PER")], [(0, 2, "PER")], []),
        # One gold entity split in two predictions: two boundary errors, not a miss.
        (
            [(6, 9, "LOC")],
            [(6, 7, "LOC"), (7, 9, "LOC")],
            [
                EntityError("boundary", (6, 9, "LOC"), (6, 7, "LOC")),
                EntityError("boundary", (6, 9, "LOC"), (7, 9, "LOC")),
            ],
        ),
    ],
)
def test_classify_errors(gold, pred, expected) -> None:  # type: ignore[no-untyped-def]
    assert classify_errors(gold, pred) == expected


def test_compare_and_html() -> None:
    gold = make_doc([(0, 2, "PER"), (3, 5, "PER"), (6, 9, "LOC")])
    pred = make_doc([(0, 2, "PER"), (3, 5, "ORG"), (6, 8, "LOC"), (9, 10, "MISC")])
    report = compare([gold], [pred])
    assert report.kind_counts() == {
        "type": 1,
        "boundary": 1,
        "boundary+type": 0,
        "missed": 0,
        "spurious": 1,
    }
    assert report.confusions()[0][1] == 1
    page = errors_html(report, [gold], [pred], title="Test page")
    assert page.startswith("<!DOCTYPE html>") and "<title>Test page</title>" in page
    assert "type: 'Emmanuel Macron' PER predicted as ORG" in page
    assert "boundary: 'New York City' LOC predicted as 'New York' LOC" in page
    assert "spurious: 'today' MISC" in page
    assert "gold LOC" in page and "pred LOC" in page and "pred MISC" in page
    with pytest.raises(ValueError, match="words differ"):
        compare([gold], [Doc(gold.vocab, words=["other"] * len(gold))])


def test_entity_scores_pair_each_confidence_with_correctness() -> None:
    gold = make_doc([(0, 2, "PER"), (3, 5, "PER"), (6, 9, "LOC")])
    pred = make_doc([(0, 2, "PER"), (3, 5, "ORG")])
    pred.spans["bert_ner"] = SpanGroup(
        pred,
        name="bert_ner",
        spans=[Span(pred, 0, 2, "PER"), Span(pred, 3, 5, "ORG"), Span(pred, 9, 10, "MISC")],
        attrs={"scores": [0.91234, 0.6, 0.3]},
    )
    no_scores = make_doc([])
    assert entity_scores([gold, gold], [pred, no_scores], "bert_ner") == {
        "labels": ["PER", "ORG", "MISC"],
        "scores": [0.9123, 0.6, 0.3],
        "correct": [True, False, False],
    }


def test_analyze_cli(pipeline_path: Path, tmp_path: Path) -> None:
    nlp = spacy.load(pipeline_path)
    examples = make_examples(nlp, 30, 7)
    data = tmp_path / "dev.spacy"
    DocBin(docs=[ex.reference for ex in examples]).to_disk(data)
    result = CliRunner().invoke(app, ["analyze", str(pipeline_path), str(data), str(tmp_path)])
    assert result.exit_code == 0, result.output
    analysis = json.loads((tmp_path / "errors.json").read_text())
    expected = nlp.evaluate(examples)
    assert analysis["scores"]["f"] == pytest.approx(100 * expected["ents_f"], abs=0.01)
    assert analysis["scores"]["n_gold"] == sum(len(ex.reference.ents) for ex in examples)
    assert set(analysis["error_kinds"]) == {
        "type",
        "boundary",
        "boundary+type",
        "missed",
        "spurious",
    }
    n_errors = sum(analysis["error_kinds"].values())
    assert n_errors == sum(c["count"] for c in analysis["confusions"])
    assert "<html" in (tmp_path / "errors.html").read_text()
    assert "ALL" in result.output
    # Every predicted entity's confidence, and whether it was right.
    confidences = analysis["entity_scores"]
    assert len(confidences["scores"]) == analysis["scores"]["n_pred"]
    assert sum(confidences["correct"]) == analysis["scores"]["tp"]
    assert all(0.0 <= score <= 1.0 for score in confidences["scores"])


def test_analyze_cli_names_a_bad_file(pipeline_path: Path, tmp_path: Path) -> None:
    bad = tmp_path / "dev.spacy"
    bad.write_bytes(b"not a docbin")
    result = CliRunner().invoke(app, ["analyze", str(pipeline_path), str(bad), str(tmp_path)])
    assert result.exit_code == 1
    assert f"{bad}: not a readable spaCy DocBin" in result.output


def test_analyze_warns_about_gold_labels_the_pipeline_does_not_predict(
    pipeline_path: Path, tmp_path: Path
) -> None:
    """Gold data in another label scheme scores 0 with no hint why; analyze names the labels."""
    nlp = spacy.load(pipeline_path)
    doc = nlp.make_doc("Ann Lee met Bob in Oslo .")
    doc.ents = [Span(doc, 0, 2, label="PERSON"), Span(doc, 3, 4, label="PERSON")]
    data = tmp_path / "dev.spacy"
    DocBin(docs=[doc]).to_disk(data)
    result = CliRunner().invoke(app, ["analyze", str(pipeline_path), str(data), str(tmp_path)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())  # wasabi wraps long lines
    assert "gold labels the pipeline does not predict: PERSON (2)" in said
    known = nlp.make_doc("Ann Lee met Bob .")
    label = nlp.get_pipe("bert_ner").labels[0]
    known.ents = [Span(known, 0, 2, label=label)]
    DocBin(docs=[known]).to_disk(data)
    result = CliRunner().invoke(app, ["analyze", str(pipeline_path), str(data), str(tmp_path)])
    assert result.exit_code == 0 and "does not predict" not in result.output
