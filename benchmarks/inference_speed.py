"""Inference speed of a trained bert_ner pipeline against its peers, on the same sentences.

    python benchmarks/inference_speed.py training/model-best --n-sents 10000
    python benchmarks/inference_speed.py training/model-best --gpu-id 0 \
        --output benchmarks/work/results/inference_gpu.json

On a GPU (`--gpu-id`), the systems are GPU_SYSTEMS: ours as `spacy_bert_ner.load` gives it there
(`inference.gpu_batching`), ours on the CPU (every core) as the fp32 reference the GPU's entities
are compared with, transformers' pipeline on the same GPU, ours in mixed precision
(`mixed_precision = true`: the encoder under fp16 autocast), ours with the config's CPU batching
and with each of BATCH_SWEEP's batch sizes; dev F1 in fp32 and fp16. The JSON is rewritten after
each system, so a run cut short keeps what it measured.

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
from typing import Any, Dict, List, Tuple

SYSTEMS = ["ours", "ours-int8", "ours-batch64", "hf-pipeline", "spacy-ner"]
GPU_SYSTEMS = ["ours", "ours-cpu", "hf-pipeline", "ours-fp16", "ours-cpu-batching", "ours-sweep"]
# (nlp.pipe batch size in docs, the transformer's max_batch_items) tried by ours-sweep on a GPU.
BATCH_SWEEP = [(512, 1024), (512, 4096), (2048, 4096), (2048, 16384), (8192, 16384), (8192, 65536)]
CONFIG = Path(__file__).parent.parent / "configs" / "bert_ner.cfg"
# The accuracy benchmark's spaCy ner peer: the same transformer and batching as CONFIG.
SPACY_NER_CONFIG = Path(__file__).parent / "configs" / "spacy_ner.cfg"
DATA = Path(__file__).parent.parent.parent / "shared" / "data" / "conll2003"
OUTPUT = Path(__file__).parent / "work" / "results" / "inference_cpu.json"


def sentences(n: int) -> List[str]:
    import spacy

    from spacy_bert_ner.convert import conll_to_docs

    texts: List[str] = []
    for split in ("test", "dev", "train"):
        for doc in conll_to_docs(DATA / f"{split}.txt", spacy.blank("en"), n_sents=1):
            texts.append(doc.text)
    return texts[:n]


def hf_pipeline(model_dir: str, workdir: str, device: int = -1) -> Any:
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
        device=device,
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


def load_ours(model_dir: str, system: str) -> Any:
    """Our pipeline as `spacy_bert_ner.load` gives it (on a GPU: `gpu_batching`); on CPU, and for
    ours-cpu-batching, with the shipped config's batching (`nlp.batch_size`, `max_batch_items`),
    which a model trained with an older config may lack."""
    from thinc.api import Config, get_current_ops

    from spacy_bert_ner import load

    overrides = {}
    if system.endswith("fp16"):
        overrides = {"components": {"transformer": {"model": {"mixed_precision": True}}}}
    nlp = load(model_dir, quantized=system.endswith("int8"), config=overrides)
    if get_current_ops().device_type != "gpu" or system == "ours-cpu-batching":
        shipped = Config().from_disk(CONFIG, interpolate=False)
        batching = shipped["nlp"]["batch_size"], shipped["components"]["transformer"]
        set_batching(nlp, batching[0], batching[1]["max_batch_items"])
    return nlp


def set_batching(nlp: Any, batch_size: int, max_batch_items: int) -> None:
    nlp.batch_size = batch_size
    nlp.get_pipe("transformer").cfg["max_batch_items"] = max_batch_items


def timed(run: Any, repeats: int) -> Tuple[float, List[float], Any]:
    """The best of several timed runs (this machine's speed varies by +-15% from minute to
    minute), the time of each, and the last run's result."""
    timings, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        timings.append(time.perf_counter() - start)
    return min(timings), timings, result


def run_system(
    system: str, model_dir: str, texts: List[str], batch_size: int, repeats: int, gpu_id: int
) -> Dict[str, Any]:
    """Time one system over the texts (after a warm-up batch); return speed and entities."""
    words = sum(len(text.split()) for text in texts)
    on_gpu = gpu_id >= 0 and system != "ours-cpu"
    if system == "hf-pipeline":
        workdir = tempfile.mkdtemp()
        pipe = hf_pipeline(model_dir, workdir, gpu_id if on_gpu else -1)
        list(pipe(texts[:batch_size], batch_size=batch_size))

        def run() -> List[List[List[Any]]]:
            return [
                [[e["start"], e["end"], e["entity_group"]] for e in result]
                for result in pipe(texts, batch_size=batch_size)
            ]
    else:
        if on_gpu:
            import spacy

            spacy.require_gpu(gpu_id)
        nlp = spacy_ner_pipeline() if system == "spacy-ner" else load_ours(model_dir, system)
        if system == "ours-sweep":
            return {"system": system, "words": words, "sweep": sweep(nlp, texts, repeats)}
        size = batch_size if system == "ours-batch64" else nlp.batch_size
        list(nlp.pipe(texts[:size], batch_size=size))

        def run() -> List[List[List[Any]]]:
            return [
                [[e.start_char, e.end_char, e.label_] for e in doc.ents]
                for doc in nlp.pipe(texts, batch_size=size)
            ]

    seconds, timings, entities = timed(run, repeats)
    return {
        "system": system,
        "words": words,
        "seconds": round(seconds, 2),
        "seconds_per_run": [round(t, 2) for t in timings],
        "words_per_second": round(words / seconds),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "entities": entities,
    }


def sweep(nlp: Any, texts: List[str], repeats: int) -> List[Dict[str, Any]]:
    """words/s for each of BATCH_SWEEP's settings, and a profile of the fastest."""
    import cProfile

    from training_speed import top_functions  # benchmarks/training_speed.py

    words = sum(len(text.split()) for text in texts)
    rows = []
    for batch_size, max_items in BATCH_SWEEP:
        set_batching(nlp, batch_size, max_items)
        list(nlp.pipe(texts[:batch_size]))
        seconds, _, _ = timed(lambda: sum(1 for _ in nlp.pipe(texts)), repeats)
        rows.append(
            {
                "batch_size": batch_size,
                "max_batch_items": max_items,
                "words_per_second": round(words / seconds),
            }
        )
    best = max(rows, key=lambda r: r["words_per_second"])
    set_batching(nlp, best["batch_size"], best["max_batch_items"])
    profiler = cProfile.Profile()
    profiler.enable()
    sum(1 for _ in nlp.pipe(texts))
    profiler.disable()
    # By own time: on a GPU, a function that waits for the device has the wait as its own time.
    rows.append({"profile_of_best": top_functions(profiler, n=30, by="own_s")})
    return rows


def evaluate_dev(model_dir: str, system: str, gpu_id: int) -> float:
    """Dev F1 of ours as `system` names it: eval-fp32, eval-int8 or eval-fp16."""
    from spacy.training import Corpus

    if gpu_id >= 0:
        import spacy

        spacy.require_gpu(gpu_id)
    nlp = load_ours(model_dir, system)
    dev = Path(model_dir).parent.parent / "corpus" / "dev.spacy"
    return round(100 * nlp.evaluate(list(Corpus(str(dev))(nlp)))["ents_f"], 2)


def gpu_name(gpu_id: int) -> str:
    import torch

    return torch.cuda.get_device_name(gpu_id) if gpu_id >= 0 else "cpu"


def agreement(a: List[List[List[Any]]], b: List[List[List[Any]]]) -> Dict[str, float]:
    """How far b's entities agree with a's: identical docs, and entity-level F1 with a as gold."""
    from spacy_bert_ner.scorer import score_spans

    same = sum(x == y for x, y in zip(a, b))
    scores = score_spans([map(tuple, doc) for doc in a], [map(tuple, doc) for doc in b])
    f = scores["f"] if scores["n_gold"] or scores["n_pred"] else 100.0
    return {"identical_docs": round(100 * same / len(a), 2), "entity_f1": f}


def child(args: argparse.Namespace) -> None:
    import torch

    threads = os.cpu_count() if args.system == "ours-cpu" else args.threads
    torch.set_num_threads(threads or 1)
    if args.system.startswith("eval-"):
        print(json.dumps({"f": evaluate_dev(args.model, args.system, args.gpu_id)}))
        return
    texts = sentences(args.n_sents)
    result = run_system(args.system, args.model, texts, args.batch_size, args.repeats, args.gpu_id)
    result["torch_threads"] = threads
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="trained pipeline directory (e.g. training/model-best)")
    parser.add_argument("--n-sents", type=int, default=10000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per system (best kept)")
    parser.add_argument("--systems", help="default: SYSTEMS, or GPU_SYSTEMS with --gpu-id")
    parser.add_argument("--gpu-id", type=int, default=-1, help="GPU id, or -1 for the CPU")
    parser.add_argument("--output", default=str(OUTPUT))
    parser.add_argument("--system", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.system:
        return child(args)
    on_gpu = args.gpu_id >= 0
    systems = (args.systems or ",".join(GPU_SYSTEMS if on_gpu else SYSTEMS)).split(",")
    reduced = "eval-fp16" if on_gpu else "eval-int8"
    results: Dict[str, Dict[str, Any]] = {}
    for system in systems + ["eval-fp32", reduced]:
        cmd = [sys.executable, __file__, args.model, "--system", system]
        cmd += ["--n-sents", str(args.n_sents), "--batch-size", str(args.batch_size)]
        cmd += ["--threads", str(args.threads), "--repeats", str(args.repeats)]
        cmd += ["--gpu-id", str(args.gpu_id)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"{system} failed:\n{out.stderr[-3000:]}")
        results[system] = json.loads(out.stdout.strip().splitlines()[-1])
        shown = {k: v for k, v in results[system].items() if k != "entities"}
        print(system, json.dumps(shown), flush=True)
        # Written after every system, so that a run cut short keeps what it measured.
        summary = summarize(args, results)
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


def summarize(args: argparse.Namespace, results: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """The JSON result from the systems measured so far."""
    on_gpu = args.gpu_id >= 0
    entities = {name: r["entities"] for name, r in results.items() if "entities" in r}
    hf = results.get("hf-pipeline", {}).get("words_per_second")
    summary: Dict[str, Any] = {
        "command": "python benchmarks/inference_speed.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {args.threads}",
        "device": gpu_name(args.gpu_id),
        "sentences": args.n_sents,
        "batch_size": f"{args.batch_size} (ours: the config's nlp.batch_size, except ours-batch64)",
        "systems": {
            name: {k: v for k, v in r.items() if k != "entities"}
            for name, r in results.items()
            if not name.startswith("eval-")
        },
        "ratios_vs_hf_pipeline": {
            name: round(r["words_per_second"] / hf, 2)
            for name, r in results.items()
            if hf and "words_per_second" in r
        },
    }
    sweep_rows = [r for r in results.get("ours-sweep", {}).get("sweep", []) if "batch_size" in r]
    if sweep_rows and hf:
        best = max(sweep_rows, key=lambda r: r["words_per_second"])
        summary["best_batching_vs_hf_pipeline"] = {
            **best,
            "ratio": round(best["words_per_second"] / hf, 2),
        }
    reduced = "fp16" if on_gpu else "int8"
    summary[reduced] = {
        f"dev_f1_{name[5:]}": r["f"] for name, r in results.items() if name.startswith("eval-")
    }
    reference = "ours-cpu" if on_gpu else "ours"
    summary[f"agreement_with_{reference.replace('-', '_')}_fp32"] = {
        name: agreement(entities[reference], entities[name])
        for name in entities
        if name.startswith("ours") and name != reference and reference in entities
    }
    return summary


if __name__ == "__main__":
    main()
