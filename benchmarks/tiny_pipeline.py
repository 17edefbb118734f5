"""The inference proxy's pipeline: the project config over a tiny BERT, trained for one epoch.

    python benchmarks/tiny_pipeline.py /tmp/tiny
    OMP_NUM_THREADS=1 python benchmarks/inference_speed.py /tmp/tiny/training/model-best \
        --threads 1 --n-sents 5000 --systems ours,hf-pipeline \
        --output benchmarks/results/inference_cpu_proxy.json

With the tiny BERT of `training_speed.py` (2 layers, width 64, the MiniLM tokenizer, random
weights) the encoder costs little, so inference words/s measures each system's own work around
it: what is left over on a fast GPU, as `training_speed.py` is for training. One epoch of
CoNLL-2003 (a minute on two cores) gives the pipeline the entity counts of a trained one (dev F1
about 85), which decoding and setting entities depend on. It is written where
`inference_speed.py` looks for it: OUTPUT/training/model-best, with the dev set in
OUTPUT/corpus/dev.spacy.
"""

import random
import sys
from pathlib import Path

import spacy
import torch
import typer
from spacy.tokens import DocBin
from spacy.training import Example
from spacy.util import fix_random_seed, load_config, load_model_from_config, registry

from spacy_bert_ner.convert import conll_to_docs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from training_speed import tiny_bert  # noqa: E402  (benchmarks/training_speed.py)

DATA = ROOT.parent / "shared" / "data" / "conll2003"


def main(
    output: Path = typer.Argument(..., help="Directory for training/model-best and corpus/"),
    epochs: int = typer.Option(1, help="Epochs over CoNLL-2003 train"),
    learn_rate: float = typer.Option(1e-3, help="Learning rate (constant; a random encoder)"),
    seed: int = typer.Option(0),
) -> None:
    """Train the project config with the tiny BERT on CoNLL-2003 and save it for inference_speed."""
    fix_random_seed(seed)  # the classifier's and casing features' initial weights, and dropout
    (output / "encoder").mkdir(parents=True, exist_ok=True)
    encoder = tiny_bert(output / "encoder")
    config = load_config(
        ROOT / "configs" / "bert_ner.cfg",
        overrides={
            "components.transformer.model.name": str(encoder),
            "training.optimizer.learn_rate": learn_rate,  # constant: no corpus for the schedule
            "system.seed": seed,
        },
    )
    nlp = load_model_from_config(config, auto_fill=True)
    blank = spacy.blank("en")
    train = [
        Example(nlp.make_doc(doc.text), doc)
        for doc in conll_to_docs(DATA / "train.txt", blank, n_sents=10)
    ]
    nlp.initialize(lambda: train[:200])
    optimizer = nlp.create_optimizer()
    batcher = registry.resolve({"batcher": config["training"]["batcher"]})["batcher"]
    rng = random.Random(seed)
    for epoch in range(epochs):
        rng.shuffle(train)
        losses: dict = {}
        for batch in batcher(train):
            nlp.update(batch, sgd=optimizer, drop=0.1, losses=losses)
        print(f"epoch {epoch}: losses {losses}", flush=True)
    (output / "training").mkdir(parents=True, exist_ok=True)
    nlp.to_disk(output / "training" / "model-best")
    (output / "corpus").mkdir(parents=True, exist_ok=True)
    dev = DocBin(docs=conll_to_docs(DATA / "dev.txt", blank, n_sents=10))
    dev.to_disk(output / "corpus" / "dev.spacy")
    print(f"saved {output / 'training' / 'model-best'}")


if __name__ == "__main__":
    torch.set_num_threads(2)
    typer.run(main)
