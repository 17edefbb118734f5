"""Accuracy benchmark: bert_ner vs spaCy's transition `ner` vs the Hugging Face recipe, on the same
encoder, splits and epoch budget, scored by one conlleval-style scorer (spacy_bert_ner.scorer).

One system on one dataset per run, saved as JSON in work/results/accuracy/ (git-ignored), so that
runs can be spread over sessions; benchmarks/project.yml names the runs of each claim:

    python accuracy.py run bert_ner conll2003      # ours, configs/bert_ner.cfg
    python accuracy.py run spacy_ner conll2003     # benchmarks/configs/spacy_ner.cfg
    python accuracy.py run hf conll2003            # benchmarks/hf_recipe.py
    python accuracy.py evaluate MODEL conll2003 --name NAME --n-sents 1

Variants of ours take `--name`, `--config`, `--n-sents` and `--set key=value`.
"""

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import spacy
import srsly
import torch
import typer
from spacy.cli.train import train as spacy_train
from spacy.language import Language
from spacy.tokens import Doc, DocBin
from spacy.util import load_config, registry

import spacy_bert_ner
from spacy_bert_ner.convert import conll_to_docs
from spacy_bert_ner.decoding import tags_to_spans
from spacy_bert_ner.distillation import TEACHER_KEY, add_teacher_targets
from spacy_bert_ner.encoders import EMBEDDED_ENCODER, resolve_encoder
from spacy_bert_ner.evaluation.corpus import predict_corpus
from spacy_bert_ner.evaluation.error_kinds import compare
from spacy_bert_ner.schedules import batches_per_epoch
from spacy_bert_ner.scorer import EntitySpan, doc_spans, score_spans

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "work" / "results" / "accuracy"

SYSTEMS = {
    "bert_ner": ROOT / "configs" / "bert_ner.cfg",
    "spacy_ner": ROOT / "benchmarks" / "configs" / "spacy_ner.cfg",
    "hf": None,
}
DATASETS = {
    "conll2003": ("conll2003/train.txt", "conll2003/dev.txt", "conll2003/test.txt"),
    "wnut17": ("wnut17/train.conll", "wnut17/dev.conll", "wnut17/test.conll"),
    # The held-out corpus of benchmarks/heldout_corpus.py (pass its parent as --data-dir).
    "wnut16": ("wnut16/train.conll", "wnut16/dev.conll", "wnut16/test.conll"),
}
SPLITS = ("train", "dev", "test")
WARMUP_RATIO = 0.1

app = typer.Typer(no_args_is_help=True, add_completion=False)


def project_n_sents() -> int:
    """Sentences per Doc in the project workflow (project.yml's `n_sents` var)."""
    return int(srsly.read_yaml(ROOT / "project.yml")["vars"]["n_sents"])


def default_n_sents(system: str, dataset: str) -> int:
    """Ours reads CoNLL-2003 as the project does (document context); the peers, as in their
    recipes, read one sentence per example. WNUT-17 tweets have no documents."""
    return project_n_sents() if system == "bert_ner" and dataset == "conll2003" else 1


def load_splits(
    paths: Dict[str, Path], n_sents: int, limit: int, train_limit: int
) -> Dict[str, List[Doc]]:
    """Gold Docs of each split; `train_limit` keeps only the first N training sentences."""
    return {
        split: load_docs(path, n_sents, train_limit if split == "train" and train_limit else limit)
        for split, path in paths.items()
    }


def load_docs(path: Path, n_sents: int, limit: int) -> List[Doc]:
    """Gold Docs of up to `n_sents` sentences of a document (only the first `limit` sentences'
    worth when limit > 0, for smoke tests)."""
    docs: List[Doc] = []
    n_seen = 0
    for doc in conll_to_docs(path, spacy.blank("en"), n_sents=n_sents):
        n_seen += sum(1 for _ in doc.sents)
        if limit and n_seen > limit:
            break
        docs.append(doc)
    return docs


def bio_tags(doc: Doc) -> List[str]:
    return [f"{t.ent_iob_}-{t.ent_type_}" if t.ent_iob_ in ("B", "I") else "O" for t in doc]


def count_batches(config: Any) -> int:
    """Batches per epoch as training makes them: the (interpolated) config's training corpus,
    its augmenter included, cut by its batcher (`schedules.batches_per_epoch`, what our schedule
    counts)."""
    blocks = {"corpus": config["corpora"]["train"], "batcher": config["training"]["batcher"]}
    resolved = registry.resolve(blocks)
    return batches_per_epoch(resolved["corpus"], resolved["batcher"], config["nlp"]["lang"])


def train_spacy(
    config_path: Path,
    encoder: str,
    docs: Dict[str, List[Doc]],
    run_dir: Path,
    epochs: int,
    overrides: Dict[str, Any],
    gpu_id: int,
) -> Dict[str, Any]:
    """Train a spaCy pipeline (ours or spacy_ner) into run_dir/training."""
    corpus = run_dir / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for split, split_docs in docs.items():
        # user_data: teacher probabilities (`--teacher`), for distillation.
        DocBin(docs=split_docs, store_user_data=True).to_disk(corpus / f"{split}.spacy")
    train_path = {"paths.train": str(corpus / "train.spacy")}
    base = load_config(config_path, overrides={**overrides, **train_path}, interpolate=True)
    n_batches = count_batches(base)
    total_steps = epochs * n_batches
    settings: Dict[str, Any] = {
        "components.transformer.model.name": encoder,
        "training.max_epochs": epochs,
        "training.max_steps": 0,
    }
    # Ours counts its schedule from the corpus (spacy_bert_ner.warmup_linear.v1); a config with
    # thinc's fixed warmup_linear.v1 (spaCy's ner) is given the same warmup and end here.
    if base["training"]["optimizer"]["learn_rate"].get("@schedules") == "warmup_linear.v1":
        settings["training.optimizer.learn_rate.total_steps"] = total_steps
        settings["training.optimizer.learn_rate.warmup_steps"] = round(WARMUP_RATIO * total_steps)
    settings.update(overrides)
    # The exact config trained, saved beside the model, with a log of the dev scores.
    config = load_config(config_path, overrides=settings, interpolate=False)
    log_path = run_dir / "train_log.jsonl"
    log_path.unlink(missing_ok=True)
    config["training"]["logger"] = {
        "@loggers": "spacy.ConsoleLogger.v3",
        "progress_bar": None,
        "console_output": True,
        "output_file": str(log_path),
    }
    config.to_disk(run_dir / "config.cfg")
    paths = {"paths.train": str(corpus / "train.spacy"), "paths.dev": str(corpus / "dev.spacy")}
    start = time.perf_counter()
    spacy_train(run_dir / "config.cfg", run_dir / "training", use_gpu=gpu_id, overrides=paths)
    return {
        "train_seconds": round(time.perf_counter() - start),
        "batches_per_epoch": n_batches,
        "total_steps": total_steps,
        "settings": settings,
        "dev_curve": read_curve(log_path),
    }


def predict_spacy(
    nlp: Language, docs: Dict[str, List[Doc]]
) -> Tuple[Dict[str, Any], List[List[EntitySpan]], List[List[EntitySpan]]]:
    """Predict dev and test with a trained spaCy pipeline."""
    start = time.perf_counter()
    preds = {split: predict_corpus(nlp, docs[split]) for split in ("dev", "test")}
    info = {
        "predict_seconds": round(time.perf_counter() - start),
        "errors_dev": compare(docs["dev"], preds["dev"]).kind_counts(),
    }
    return info, [doc_spans(d) for d in preds["dev"]], [doc_spans(d) for d in preds["test"]]


def predict_ensemble(
    pipelines: List[Language], docs: Dict[str, List[Doc]]
) -> Tuple[Dict[str, Any], List[List[EntitySpan]], List[List[EntitySpan]]]:
    """Predict dev and test with the mean tag probabilities of several bert_ner pipelines (the
    teachers of distillation), decoded by the first one's component."""
    start = time.perf_counter()
    ner = pipelines[0].get_pipe("bert_ner")
    preds = {}
    for split in ("dev", "test"):
        copies = [
            Doc(ner.vocab, words=[t.text for t in d], spaces=[bool(t.whitespace_) for t in d])
            for d in docs[split]
        ]
        add_teacher_targets(copies, pipelines)
        for doc in copies:
            probs = doc.user_data.pop(TEACHER_KEY)["probs"].astype("float32")
            ner.set_annotations([doc], [ner.model.ops.asarray2f(probs)])
        preds[split] = copies
    info = {
        "predict_seconds": round(time.perf_counter() - start),
        "errors_dev": compare(docs["dev"], preds["dev"]).kind_counts(),
    }
    return info, [doc_spans(d) for d in preds["dev"]], [doc_spans(d) for d in preds["test"]]


def read_curve(log_path: Path) -> List[Tuple[int, float]]:
    """(step, dev entity F1) at each of spaCy's evaluations during training."""
    if not log_path.exists():
        return []
    curve = []
    for line in srsly.read_jsonl(log_path):
        if isinstance(line, dict) and line.get("score") is not None:
            # spaCy's console logger writes the scores as percentages.
            curve.append((line["step"], round(float(line["scores"]["ents_f"]), 2)))
    return curve


def run_hf(
    encoder: str, docs: Dict[str, List[Doc]], epochs: int, gpu_id: int
) -> Tuple[Dict[str, Any], List[List[EntitySpan]], List[List[EntitySpan]]]:
    """Train the Hugging Face recipe and predict dev and test with the last model."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import hf_recipe

    train = [([t.text for t in doc], bio_tags(doc)) for doc in docs["train"]]
    start = time.perf_counter()
    model, tokenizer, settings = hf_recipe.train(
        resolve_encoder(encoder),
        train,
        epochs=epochs,
        device=f"cuda:{gpu_id}" if gpu_id >= 0 else "cpu",
    )
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    spans = {
        split: [
            tags_to_spans(tags)
            for tags in hf_recipe.predict(
                model, tokenizer, [[t.text for t in d] for d in docs[split]]
            )
        ]
        for split in ("dev", "test")
    }
    info = {
        "train_seconds": round(train_seconds),
        "predict_seconds": round(time.perf_counter() - start),
        "settings": settings,
    }
    return info, spans["dev"], spans["test"]


def machine() -> Dict[str, Any]:
    import transformers

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "spacy": spacy.__version__,
        "transformers": transformers.__version__,
        "spacy_bert_ner": spacy_bert_ner.__version__,
    }


def parse_set(values: List[str]) -> Dict[str, Any]:
    """`key=value` config overrides; values are read as JSON where they parse, else strings."""
    overrides = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--set expects key=value, got {item!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


@app.command("run")
def run(
    system: str = typer.Argument(..., help="bert_ner, spacy_ner or hf"),
    dataset: str = typer.Argument(..., help="conll2003 or wnut17"),
    epochs: int = typer.Option(3, help="Epoch budget (the same for every system)"),
    name: Optional[str] = typer.Option(None, help="Result name (default: the system)"),
    config: Optional[Path] = typer.Option(None, help="spaCy config (default: the system's)"),
    n_sents: Optional[int] = typer.Option(None, help="Sentences per Doc (spaCy systems)"),
    set_: List[str] = typer.Option([], "--set", help="Config override key=value (repeatable)"),
    encoder: str = typer.Option(EMBEDDED_ENCODER, help="Encoder name or directory"),
    data_dir: Path = typer.Option(ROOT.parent / "shared" / "data", help="Holds the datasets"),
    work_dir: Path = typer.Option(ROOT / "benchmarks" / "work", help="Corpora and models"),
    results_dir: Path = typer.Option(RESULTS, help="Where the result JSON goes"),
    limit: int = typer.Option(0, help="Use only the first N sentences of each split (smoke test)"),
    train_limit: int = typer.Option(0, help="Train on the first N training sentences only"),
    gpu_id: int = typer.Option(-1, help="GPU id, or -1 for CPU"),
    teacher: List[Path] = typer.Option(
        [],
        help="Trained pipeline whose tag probabilities the training docs carry (repeatable; "
        "train on them with --set components.bert_ner.teacher_weight=W)",
    ),
) -> None:
    """Train and evaluate one system on one dataset; save the scores as JSON."""
    if system not in SYSTEMS:
        raise typer.BadParameter(f"unknown system {system!r}: use {', '.join(SYSTEMS)}")
    if dataset not in DATASETS:
        raise typer.BadParameter(f"unknown dataset {dataset!r}: use {', '.join(DATASETS)}")
    name = name or system
    n_sents = default_n_sents(system, dataset) if n_sents is None else n_sents
    paths = dict(zip(SPLITS, (data_dir / p for p in DATASETS[dataset])))
    if system == "hf":
        gold = load_splits(paths, 1, limit, train_limit)
        info, dev_spans, test_spans = run_hf(encoder, gold, epochs, gpu_id)
    else:
        config_path = config or SYSTEMS[system]
        assert config_path is not None
        gold = load_splits(paths, n_sents, limit, train_limit)
        if teacher:
            start = time.perf_counter()
            add_teacher_targets(gold["train"], [spacy.load(path) for path in teacher])
            typer.echo(f"Teacher probabilities: {time.perf_counter() - start:.0f} s")
        run_dir = work_dir / f"{dataset}__{name}"
        info = train_spacy(config_path, encoder, gold, run_dir, epochs, parse_set(set_), gpu_id)
        info.update(n_sents=n_sents, config=str(config_path), teachers=[str(t) for t in teacher])
        predicted, dev_spans, test_spans = predict_spacy(
            spacy.load(run_dir / "training" / "model-last"), gold
        )
        info.update(predicted)
    info.update(system=system, name=name, dataset=dataset, epochs=epochs, encoder=encoder)
    info.update(
        train_limit=train_limit, train_sentences=sum(len(list(d.sents)) for d in gold["train"])
    )
    save_result(results_dir, info, gold, dev_spans, test_spans, limit)


@app.command("evaluate")
def evaluate(
    model: Path = typer.Argument(..., exists=True, file_okay=False, help="Trained spaCy pipeline"),
    dataset: str = typer.Argument(..., help="conll2003 or wnut17"),
    name: str = typer.Option(..., help="Result name"),
    n_sents: int = typer.Option(1, help="Sentences per Doc, as the model was trained"),
    epochs: int = typer.Option(3, help="Epochs the model was trained for"),
    train_seconds: int = typer.Option(0, help="Training time, when measured elsewhere"),
    data_dir: Path = typer.Option(ROOT.parent / "shared" / "data", help="Holds the datasets"),
    results_dir: Path = typer.Option(RESULTS, help="Where the result JSON goes"),
    gpu_id: int = typer.Option(-1, help="GPU id, or -1 for CPU"),
    ensemble_with: List[Path] = typer.Option(
        [], help="More bert_ner pipelines: score the mean of their probabilities (repeatable)"
    ),
) -> None:
    """Score a spaCy pipeline trained elsewhere (e.g. by `spacy project run`) like `run` does."""
    if dataset not in DATASETS:
        raise typer.BadParameter(f"unknown dataset {dataset!r}: use {', '.join(DATASETS)}")
    paths = dict(zip(SPLITS, (data_dir / p for p in DATASETS[dataset])))
    gold = {split: load_docs(paths[split], n_sents, 0) for split in ("dev", "test")}
    if gpu_id >= 0:
        spacy.require_gpu(gpu_id)
    nlp = spacy.load(model)
    if ensemble_with:
        pipelines = [nlp, *(spacy.load(path) for path in ensemble_with)]
        info, dev_spans, test_spans = predict_ensemble(pipelines, gold)
        info.update(ensemble=[str(path) for path in [model, *ensemble_with]])
    else:
        info, dev_spans, test_spans = predict_spacy(nlp, gold)
    system = "bert_ner" if "bert_ner" in nlp.pipe_names else "spacy_ner"
    info.update(system=system, name=name, dataset=dataset, epochs=epochs, n_sents=n_sents)
    info.update(model=str(model), train_seconds=train_seconds)
    save_result(results_dir, info, gold, dev_spans, test_spans, 0)


def save_result(
    results_dir: Path,
    info: Dict[str, Any],
    gold: Dict[str, List[Doc]],
    dev_spans: List[List[EntitySpan]],
    test_spans: List[List[EntitySpan]],
    limit: int,
) -> None:
    """Score dev and test against the gold Docs and write the result JSON."""
    result = {
        **info,
        "limit": limit,
        "command": " ".join(["python", "accuracy.py", *sys.argv[1:]]),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine(),
        "dev": score_spans([doc_spans(d) for d in gold["dev"]], dev_spans),
        "test": score_spans([doc_spans(d) for d in gold["test"]], test_spans),
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    out = results_dir / f"{result['dataset']}__{result['name']}.json"
    srsly.write_json(out, result)
    typer.echo(
        f"{result['dataset']} {result['name']}: dev F1 {result['dev']['f']:.2f}, "
        f"test F1 {result['test']['f']:.2f} (train {info['train_seconds']} s) -> {out}"
    )


if __name__ == "__main__":
    app()
