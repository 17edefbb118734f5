"""CPU inference speed of a trained bert_ner pipeline against its peers, on the same sentences.

    python benchmarks/inference_speed.py training/model-best --n-sents 10000

Each system runs in its own process (so peak memory is its own), with the same torch thread count,
over the same raw sentences (CoNLL-2003 words joined by spaces):
- ours: `nlp.pipe(texts)` with the batching of configs/bert_ner.cfg (512 docs per batch, which the
  transformer sorts by length and encodes in sub-batches of at most 1024 tokens; a model trained
  with that config carries these settings, and they are applied to the given model here);
  ours-int8: the same with the encoder quantized to int8; ours-batch64: `nlp.pipe(texts,
  batch_size=64)`, the peers' batch size;
- hf-pipeline: transformers' `pipeline("token-classification", aggregation_strategy="first")` on
  the same fine-tuned encoder weights, with our classifier's weights for the encoder's vectors as
  its head (it has no casing features, so its entities differ from ours: a speed peer);
  (batch 64);
- spacy-ner: spaCy's transition-based `ner` over a `transformer` of the same shape, from
  benchmarks/configs/spacy_ner.cfg, which has the same batching (pretrained MiniLM, untrained ner:
  a speed-only peer).
Quantization is also scored on the dev set (entity F1 with and without int8) and its entities are
compared with the float model's. Results are printed and saved as JSON.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

SYSTEMS = ["ours", "ours-int8", "ours-batch64", "hf-pipeline", "spacy-ner"]
CONFIG = Path(__file__).parent.parent / "configs" / "bert_ner.cfg"
# The accuracy benchmark's spaCy ner peer: the same transformer and batching as CONFIG.
SPACY_NER_CONFIG = Path(__file__).parent / "configs" / "spacy_ner.cfg"
DATA = Path(__file__).parent.parent.parent / "shared" / "data" / "conll2003"


def sentences(n: int) -> List[str]:
    import spacy

    from spacy_bert_ner.convert import conll_to_docs

    texts: List[str] = []
    for split in ("test", "dev", "train"):
        for doc in conll_to_docs(DATA / f"{split}.txt", spacy.blank("en"), n_sents=1):
            texts.append(doc.text)
    return texts[:n]


def hf_pipeline(model_dir: str, workdir: str) -> Any:
    """A transformers token-classification pipeline with our encoder and classifier weights."""
    import spacy
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

    nlp = spacy.load(model_dir)
    ner = nlp.get_pipe("bert_ner")
    trf = nlp.get_pipe("transformer").model
    trf.transformer.save_pretrained(workdir)
    trf.tokenizer.save_pretrained(workdir)
    id2label = dict(enumerate(ner.tags))
    model = AutoModelForTokenClassification.from_pretrained(
        workdir,
        num_labels=len(id2label),
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )
    output_layer = ner.model.get_ref("output_layer")
    # Our classifier reads the transformer's vectors and then the casing features (concatenated);
    # Hugging Face's head has room for the first only, so it gets those weights: a speed peer,
    # whose entities are not ours when the casing features are on.
    weights = output_layer.get_param("W")[:, : model.classifier.in_features]
    with torch.no_grad():
        model.classifier.weight.copy_(torch.tensor(weights))
        model.classifier.bias.copy_(torch.tensor(output_layer.get_param("b")))
    tokenizer = AutoTokenizer.from_pretrained(workdir)
    return pipeline(
        "token-classification",
        model=model,
        tokenizer=tokenizer,
        aggregation_strategy="first",
        device=-1,
    )


def spacy_ner_pipeline() -> Any:
    import spacy
    from spacy.training import Example
    from spacy.util import load_config, load_model_from_config

    config = load_config(SPACY_NER_CONFIG)
    nlp = load_model_from_config(config, auto_fill=True)
    from spacy_bert_ner.convert import conll_to_docs

    docs = list(conll_to_docs(DATA / "dev.txt", spacy.blank("en"), n_sents=1))[:50]
    examples = [Example(nlp.make_doc(doc.text), doc) for doc in docs]
    nlp.initialize(lambda: examples)
    return nlp


def run_system(
    system: str, model_dir: str, texts: List[str], batch_size: int, repeats: int
) -> Dict[str, Any]:
    """Time one system over the texts (after a warm-up batch); return speed and entities."""
    from thinc.api import Config

    from spacy_bert_ner import load

    if system == "hf-pipeline":
        workdir = tempfile.mkdtemp()
        pipe = hf_pipeline(model_dir, workdir)
        list(pipe(texts[:batch_size], batch_size=batch_size))

        def run() -> List[List[List[Any]]]:
            return [
                [[e["start"], e["end"], e["entity_group"]] for e in result]
                for result in pipe(texts, batch_size=batch_size)
            ]
    else:
        if system == "spacy-ner":
            nlp = spacy_ner_pipeline()
        else:
            nlp = load(model_dir, quantized=system.endswith("int8"))
            shipped = Config().from_disk(CONFIG, interpolate=False)
            nlp.batch_size = shipped["nlp"]["batch_size"]
            max_items = shipped["components"]["transformer"]["max_batch_items"]
            nlp.get_pipe("transformer").cfg["max_batch_items"] = max_items
        size = batch_size if system == "ours-batch64" else nlp.batch_size
        list(nlp.pipe(texts[:size], batch_size=size))

        def run() -> List[List[List[Any]]]:
            return [
                [[e.start_char, e.end_char, e.label_] for e in doc.ents]
                for doc in nlp.pipe(texts, batch_size=size)
            ]

    # The best of several timed runs: this machine's speed varies by +-15% from minute to minute.
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        entities = run()
        timings.append(time.perf_counter() - start)
    seconds = min(timings)
    words = sum(len(text.split()) for text in texts)
    return {
        "system": system,
        "words": words,
        "seconds": round(seconds, 2),
        "seconds_per_run": [round(t, 2) for t in timings],
        "words_per_second": round(words / seconds),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "entities": entities,
    }


def evaluate_dev(model_dir: str, quantized: bool) -> float:
    from spacy.training import Corpus

    from spacy_bert_ner import load

    nlp = load(model_dir, quantized=quantized)
    dev = Path(model_dir).parent.parent / "corpus" / "dev.spacy"
    return round(100 * nlp.evaluate(list(Corpus(str(dev))(nlp)))["ents_f"], 2)


def agreement(a: List[List[List[Any]]], b: List[List[List[Any]]]) -> Dict[str, float]:
    """How far b's entities agree with a's: identical docs, and entity-level F1 with a as gold."""
    from spacy_bert_ner.scorer import score_spans

    same = sum(x == y for x, y in zip(a, b))
    scores = score_spans([map(tuple, doc) for doc in a], [map(tuple, doc) for doc in b])
    f = scores["f"] if scores["n_gold"] or scores["n_pred"] else 100.0
    return {"identical_docs": round(100 * same / len(a), 2), "entity_f1": f}


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    if args.system.startswith("eval-"):
        print(json.dumps({"f": evaluate_dev(args.model, args.system == "eval-int8")}))
        return
    texts = sentences(args.n_sents)
    print(json.dumps(run_system(args.system, args.model, texts, args.batch_size, args.repeats)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="trained pipeline directory (e.g. training/model-best)")
    parser.add_argument("--n-sents", type=int, default=10000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per system (best kept)")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--output", default="benchmarks/results/inference_cpu.json")
    parser.add_argument("--system", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.system:
        return child(args)
    results: Dict[str, Dict[str, Any]] = {}
    for system in args.systems.split(",") + ["eval-fp32", "eval-int8"]:
        cmd = [sys.executable, __file__, args.model, "--system", system]
        cmd += ["--n-sents", str(args.n_sents), "--batch-size", str(args.batch_size)]
        cmd += ["--threads", str(args.threads), "--repeats", str(args.repeats)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"{system} failed:\n{out.stderr[-3000:]}")
        results[system] = json.loads(out.stdout.strip().splitlines()[-1])
        shown = {k: v for k, v in results[system].items() if k != "entities"}
        print(system, json.dumps(shown), flush=True)
    entities = {name: r.pop("entities") for name, r in results.items() if "entities" in r}
    hf = results.get("hf-pipeline", {}).get("words_per_second")
    summary = {
        "command": "python benchmarks/inference_speed.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {args.threads}",
        "sentences": args.n_sents,
        "batch_size": f"{args.batch_size} (ours: the config's nlp.batch_size, except ours-batch64)",
        "systems": {k: v for k, v in results.items() if not k.startswith("eval-")},
        "ratios_vs_hf_pipeline": {
            name: round(r["words_per_second"] / hf, 2)
            for name, r in results.items()
            if hf and "words_per_second" in r
        },
        "int8": {
            "dev_f1_fp32": results["eval-fp32"]["f"],
            "dev_f1_int8": results["eval-int8"]["f"],
            "agreement_with_fp32": agreement(entities["ours"], entities["ours-int8"])
            if "ours" in entities and "ours-int8" in entities
            else None,
        },
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
