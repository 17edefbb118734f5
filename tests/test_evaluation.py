"""The conlleval-style scorer, the error classification and the `analyze` command."""

import json
from pathlib import Path
from typing import List, Tuple

import pytest
import spacy
from spacy.tokens import Doc, DocBin, Span, SpanGroup
from spacy.training import Example
from synthetic import make_examples
from typer.testing import CliRunner

from spacy_bert_ner.cli import app
from spacy_bert_ner.evaluation import (
    EntityError,
    classify_errors,
    compare,
    entity_scores,
    errors_html,
    score_spans,
)
from spacy_bert_ner.scorer import score_ents

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


def test_scorer_agrees_with_spacys_on_real_predictions() -> None:
    nlp = spacy.blank("en")
    examples = make_examples(nlp, 40, 3)
    predictions = make_examples(nlp, 40, 3)
    # Corrupt some predictions: drop, relabel and shift entities.
    for i, example in enumerate(predictions):
        ents = list(example.reference.ents)
        if i % 3 == 0 and ents:
            ents = ents[1:]
        elif i % 3 == 1 and ents:
            ents[0] = Span(example.reference, ents[0].start, ents[0].end, "MISC")
        example.reference.ents = ents
    scored = [Example(p.reference, g.reference) for p, g in zip(predictions, examples)]
    ours = score_spans(
        [[(e.start, e.end, e.label_) for e in ex.reference.ents] for ex in scored],
        [[(e.start, e.end, e.label_) for e in ex.predicted.ents] for ex in scored],
    )
    theirs = score_ents(scored)
    assert ours["f"] == pytest.approx(100 * theirs["ents_f"], abs=0.01)
    for label, prf in theirs["ents_per_type"].items():
        assert ours["per_type"][label]["f"] == pytest.approx(100 * prf["f"], abs=0.01)


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
