"""Out-of-domain check: a CoNLL-2003 model scored on WNUT-17 tweets, with WNUT's types mapped to
CoNLL's (person -> PER, location -> LOC, corporation and group -> ORG).

    python out_of_domain.py work/conll2003__default-s0/training/model-last --name default-s0

WNUT's product and creative-work entities have no CoNLL type and are left out of the gold, and the
model's MISC predictions are left out of its output, so the score is PER/LOC/ORG only: a prediction
of PER, LOC or ORG on a product is a false positive, as it would be in use. One tweet per Doc, as
users would call `nlp(tweet)`. Saved as JSON in work/results/out_of_domain/.
"""

import json
import sys
from pathlib import Path
from typing import Dict, List

import spacy
import typer
from spacy.tokens import Doc, Span

from spacy_bert_ner.evaluation.corpus import predict_corpus
from spacy_bert_ner.scorer import score_docs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from accuracy import load_docs, machine  # noqa: E402

TO_CONLL: Dict[str, str] = {
    "person": "PER",
    "location": "LOC",
    "corporation": "ORG",
    "group": "ORG",
}
KEPT = ("PER", "LOC", "ORG")


def keep(doc: Doc, labels: Dict[str, str]) -> Doc:
    """The doc with only its entities whose label maps into `labels`, relabelled; every other
    token outside."""
    ents = [
        Span(doc, e.start, e.end, label=labels[e.label_]) for e in doc.ents if e.label_ in labels
    ]
    doc.set_ents(ents, default="outside")
    return doc


def main(
    model: Path = typer.Argument(..., exists=True, file_okay=False, help="A CoNLL-2003 pipeline"),
    name: str = typer.Option(..., help="Result name"),
    split: str = typer.Option("test", help="WNUT-17 split: dev or test"),
    data_dir: Path = typer.Option(ROOT.parent / "shared" / "data", help="Holds the datasets"),
    results_dir: Path = typer.Option(ROOT / "benchmarks" / "work" / "results" / "out_of_domain"),
) -> None:
    """PER/LOC/ORG precision, recall and F1 of a CoNLL-2003 model on WNUT-17 tweets."""
    suffix = {"dev": "dev.conll", "test": "test.conll"}[split]
    gold: List[Doc] = [keep(d, TO_CONLL) for d in load_docs(data_dir / "wnut17" / suffix, 1, 0)]
    nlp = spacy.load(model)
    predicted = [keep(d, {label: label for label in KEPT}) for d in predict_corpus(nlp, gold)]
    scores = score_docs(gold, predicted)
    result = {
        "command": "python out_of_domain.py " + " ".join(sys.argv[1:]),
        "name": name,
        "model": str(model.relative_to(ROOT)) if model.is_relative_to(ROOT) else model.name,
        "data": f"wnut17/{suffix}, one tweet per Doc, {TO_CONLL}",
        "machine": machine(),
        "scores": scores,
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{name}: P {scores['p']:.2f} R {scores['r']:.2f} F {scores['f']:.2f}")
    for label, row in sorted(scores["per_type"].items()):
        print(
            f"  {label}: P {row['p']:.2f} R {row['r']:.2f} F {row['f']:.2f} ({row['n_gold']} gold)"
        )


if __name__ == "__main__":
    typer.run(main)
