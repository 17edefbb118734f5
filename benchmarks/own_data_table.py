"""The "train on your own data" table: workflow runs (benchmarks/run_own_data.sh) and the Hugging
Face recipe on the same data and epochs (benchmarks/accuracy.py run hf ...), from the JSON files in
benchmarks/results/own_data/, written between the own-data markers of BENCHMARKS.md:

    python benchmarks/own_data_table.py --write BENCHMARKS.md
"""

from pathlib import Path
from typing import Any, Dict, List, Optional

import srsly
import typer
from md_tables import replace_block  # benchmarks/md_tables.py, beside this script

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "own_data"
START, END = "<!-- own-data:start -->", "<!-- own-data:end -->"


CORPORA = {
    "conll1k": "CoNLL-2003, first 1,000 train sentences",
    "wnut17": "WNUT-17",
    "wnut16": "held out: WNUT-16 tweets",
}


def corpus(result: Dict[str, Any]) -> str:
    """Which corpus a run trained on: the folder of its train file, or the harness's dataset."""
    if "seconds" in result:
        train = result["command"].split("--vars.train")[1].split()[0]
        return Path(train).parent.name
    if result["dataset"] == "conll2003" and result.get("train_limit") == 1000:
        return "conll1k"
    return result["dataset"]


def row(name: str, result: Dict[str, Any]) -> str:
    if "seconds" in result:  # a workflow run, scored by `spacy evaluate` (model-best)
        system = "bert_ner (workflow)"
        run = f"{result['epochs']} epochs, {result['steps']} steps"
        minutes = result["seconds"]["train"] / 60
    else:  # the accuracy harness (last model, conlleval-style scorer)
        system = "bert_ner (harness)" if result["system"] == "bert_ner" else result["system"]
        steps = result.get("total_steps") or result.get("settings", {}).get("total_steps", "?")
        run = f"{result['epochs']} epochs, {steps} steps"
        minutes = result["train_seconds"] / 60
    dev, test = result["dev"], result["test"]
    label = CORPORA.get(corpus(result), corpus(result))
    return (
        f"| {label} | {name} | {system} | {run} | {dev['f']:.2f} | {test['p']:.2f} | "
        f"{test['r']:.2f} | **{test['f']:.2f}** | {minutes:.0f} |"
    )


def table(results_dir: Path = RESULTS) -> str:
    lines = [
        "| corpus | run | system | length | dev F1 | test P | test R | test F1 | train min |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    results: List[Any] = [(p.stem, srsly.read_json(p)) for p in sorted(results_dir.glob("*.json"))]
    results.sort(key=lambda item: (list(CORPORA).index(corpus(item[1])), item[0]))
    lines += [row(name, result) for name, result in results]
    return "\n".join(lines) + "\n"


def main(write: Optional[Path] = typer.Option(None, help="Markdown file to update")) -> None:
    text = table()
    typer.echo(text)
    if write:
        replace_block(write, START, END, text)


if __name__ == "__main__":
    typer.run(main)
