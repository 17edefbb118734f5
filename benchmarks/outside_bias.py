"""The precision/recall trade-off of `outside_bias`: dev and test F1 of one trained pipeline for a
range of biases, the bias chosen on dev only.

    python benchmarks/outside_bias.py benchmarks/work/wnut17__bert_ner/training/model-last wnut17 \
        --name wnut17__bert_ner --biases 0,0.5,1,1.5,2,3

The transformer and the classifier run once per split; only the decoding is repeated for each bias
(`outside_bias` is subtracted from the log-probability of 'O' before decoding). Saved as JSON in
benchmarks/results/outside_bias/.
"""

import json
import sys
from pathlib import Path
from typing import Any, Dict, List

import spacy
import typer
from spacy.tokens import Doc

from spacy_bert_ner.evaluation.corpus import predict_corpus
from spacy_bert_ner.scorer import score_docs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from accuracy import DATASETS, SPLITS, default_n_sents, load_docs, machine  # noqa: E402


def sweep(nlp: spacy.Language, gold: List[Doc], biases: List[float]) -> Dict[str, Any]:
    """Scores of the predictions for each bias, from one pass of the encoder and classifier."""
    ner = nlp.get_pipe("bert_ner")
    # The gold words through the pipeline up to bert_ner, as the accuracy harness predicts them.
    with nlp.select_pipes(disable=["bert_ner"]):
        docs = predict_corpus(nlp, gold)
    scores = [s for i in range(0, len(docs), 256) for s in ner.predict(docs[i : i + 256])]
    rows = {}
    for bias in biases:
        ner.outside_bias = bias
        ner.set_annotations(docs, scores)
        rows[str(bias)] = score_docs(gold, docs)
    return rows


def main(
    model: Path = typer.Argument(..., exists=True, file_okay=False, help="Trained pipeline"),
    dataset: str = typer.Argument(..., help="conll2003 or wnut17"),
    name: str = typer.Option(..., help="Result name"),
    biases: str = typer.Option("0,0.5,1,1.5,2,3", help="Comma-separated biases to try"),
    n_sents: int = typer.Option(-1, help="Sentences per Doc (default: as the harness reads it)"),
    data_dir: Path = typer.Option(ROOT.parent / "shared" / "data", help="Holds the datasets"),
    results_dir: Path = typer.Option(ROOT / "benchmarks" / "results" / "outside_bias"),
) -> None:
    """Dev and test scores for each bias; the one with the best dev F1 is reported."""
    values = [float(b) for b in biases.split(",")]
    n_sents = default_n_sents("bert_ner", dataset) if n_sents < 0 else n_sents
    paths = dict(zip(SPLITS, (data_dir / p for p in DATASETS[dataset])))
    gold = {split: load_docs(paths[split], n_sents, 0) for split in ("dev", "test")}
    nlp = spacy.load(model)
    result: Dict[str, Any] = {
        "command": "python benchmarks/outside_bias.py " + " ".join(sys.argv[1:]),
        "model": str(model.relative_to(ROOT)) if model.is_relative_to(ROOT) else model.name,
        "dataset": dataset,
        "n_sents": n_sents,
        "machine": machine(),
        "dev": sweep(nlp, gold["dev"], values),
        "test": sweep(nlp, gold["test"], values),
    }
    best = max(values, key=lambda b: result["dev"][str(b)]["f"])
    result["chosen_on_dev"] = best
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    for bias in values:
        dev, test = result["dev"][str(bias)], result["test"][str(bias)]
        mark = " <- best on dev" if bias == best else ""
        print(
            f"bias {bias:4}: dev P/R/F {dev['p']:.2f}/{dev['r']:.2f}/{dev['f']:.2f}  "
            f"test P/R/F {test['p']:.2f}/{test['r']:.2f}/{test['f']:.2f}{mark}"
        )


if __name__ == "__main__":
    typer.run(main)
