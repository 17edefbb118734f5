"""The casing features alone: spaCy's layers doc by doc against `spacy_bert_ner.CasingFeatures.v1`.

    OMP_NUM_THREADS=1 python benchmarks/casing_features.py
    python benchmarks/casing_features.py --gpu-id 0 \
        --output benchmarks/work/gpu/casing_features_h100.json

Both models are the factory's default casing features (the same weights, from the same seed, and
the same outputs): `spacy.Tok2Vec.v2` over `spacy.MultiHashEmbed.v2` and
`spacy.MaxoutWindowEncoder.v2`, and the project's batched layer. They run over CoNLL-2003 dev
sentences, one doc each (inference's case, where per-doc work is largest), in batches of
`--batch-size` docs: prediction, then a training step (forward and backward). Alternating rounds,
the best of each kept. On a GPU, each batch ends with a synchronisation, so the time includes the
kernels. The JSON also holds the outputs' largest difference (0 when they agree exactly).
"""

import json
import platform
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy
import spacy
import typer
from spacy.ml.models.tok2vec import MaxoutWindowEncoder, MultiHashEmbed, build_Tok2Vec_model
from spacy.tokens import Doc
from thinc.api import Model, fix_random_seed, get_current_ops, set_dropout_rate, to_numpy

from spacy_bert_ner.architectures import build_casing_features
from spacy_bert_ner.convert import conll_to_docs
from spacy_bert_ner.pipeline_component import DEFAULT_MODEL

ROOT = Path(__file__).parent.parent
# The factory's default casing features, without the architecture's name.
SETTINGS: Dict[str, Any] = {
    key: value for key, value in DEFAULT_MODEL["features"].items() if key != "@architectures"
}


def spacy_layers() -> Model:
    s = SETTINGS
    embed = MultiHashEmbed(s["width"], s["attrs"], s["rows"], False)
    encode = MaxoutWindowEncoder(s["width"], s["window_size"], s["maxout_pieces"], s["depth"])
    return build_Tok2Vec_model(embed, encode)


def batched_layers() -> Model:
    return build_casing_features(**SETTINGS)


def synchronize() -> None:
    xp = get_current_ops().xp
    if xp is not numpy:
        xp.cuda.get_current_stream().synchronize()


def timed(step: Callable[[List[Doc]], Any], batches: List[List[Doc]]) -> float:
    synchronize()
    start = time.perf_counter()
    for batch in batches:
        step(batch)
        synchronize()
    return time.perf_counter() - start


def main(
    output: Path = typer.Option(ROOT / "benchmarks" / "work" / "results" / "casing_features.json"),
    data: Path = typer.Option(ROOT.parent / "shared" / "data" / "conll2003" / "dev.txt"),
    batch_size: int = typer.Option(512, help="Docs per batch (sentences)"),
    rounds: int = typer.Option(5, help="Alternating timed rounds (the best is kept)"),
    gpu_id: int = typer.Option(-1, help="GPU id, or -1 for CPU"),
) -> None:
    """Seconds per pass over the dev sentences, predicting and training, for both layouts."""
    if gpu_id >= 0:
        spacy.require_gpu(gpu_id)
    nlp = spacy.blank("en")
    docs = [nlp.make_doc(doc.text) for doc in conll_to_docs(data, nlp, n_sents=1)]
    batches = [docs[i : i + batch_size] for i in range(0, len(docs), batch_size)]
    models: Dict[str, Model] = {}
    for name, build in (("spacy_layers", spacy_layers), ("casing_features", batched_layers)):
        fix_random_seed(0)
        models[name] = build()
        models[name].initialize(X=docs[:10])
        set_dropout_rate(models[name], 0.1)  # as spaCy's training sets it

    def train_step(model: Model) -> Callable[[List[Doc]], Any]:
        def step(batch: List[Doc]) -> Any:
            outputs, backprop = model.begin_update(batch)
            return backprop(outputs)

        return step

    best: Dict[str, Dict[str, float]] = {name: {} for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            for kind, step in (("predict", model.predict), ("train", train_step(model))):
                seconds = timed(step, batches)
                best[name][kind] = min(best[name].get(kind, seconds), seconds)
    difference = max(
        float(numpy.abs(to_numpy(a) - to_numpy(b)).max(initial=0.0))
        for a, b in zip(
            models["spacy_layers"].predict(batches[0]),
            models["casing_features"].predict(batches[0]),
        )
    )
    result = {
        "command": "python benchmarks/casing_features.py"
        + (f" --gpu-id {gpu_id}" if gpu_id >= 0 else ""),
        "machine": f"{platform.machine()}, {platform.platform()}",
        "device": "cpu" if gpu_id < 0 else f"gpu {gpu_id}",
        "docs": len(docs),
        "tokens": sum(len(doc) for doc in docs),
        "batch_size": batch_size,
        "settings": SETTINGS,
        "seconds_best_of_rounds": best,
        "speedup": {
            kind: round(best["spacy_layers"][kind] / best["casing_features"][kind], 2)
            for kind in ("predict", "train")
        },
        "largest_output_difference": difference,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    typer.run(main)
