"""Collect a workflow run's figures (scores, timings, speed, run length, package size) into one
small JSON. Run from the project directory the workflow ran in:

    python benchmarks/summarize_workflow.py TIMINGS.tsv OUTPUT.json [the workflow's --vars ...]
"""

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any, Dict

from spacy.util import load_config, registry

import spacy_bert_ner  # noqa: F401  (registers the schedule functions)
from spacy_bert_ner.schedules import batches_per_epoch, training_steps


def scores(path: Path) -> Dict[str, Any]:
    data = json.loads(path.read_text())
    return {
        "f": round(100 * data["ents_f"], 2),
        "p": round(100 * data["ents_p"], 2),
        "r": round(100 * data["ents_r"], 2),
        "per_type": {
            label: {k: round(100 * v, 2) for k, v in prf.items()}
            for label, prf in sorted(data["ents_per_type"].items())
        },
        "words_per_second": round(data["speed"]),
    }


def run_length(config_path: Path) -> Dict[str, int]:
    """Epochs, batches per epoch and updates of the run, as the schedule counted them."""
    config = load_config(
        config_path, overrides={"paths.train": "corpus/train.spacy"}, interpolate=True
    )
    resolved = registry.resolve(
        {
            "epochs": config["training"]["max_epochs"],
            "corpus": config["corpora"]["train"],
            "batcher": config["training"]["batcher"],
        }
    )
    n_batches = batches_per_epoch(resolved["corpus"], resolved["batcher"], config["nlp"]["lang"])
    epochs = resolved["epochs"]
    steps = training_steps(n_batches, epochs, config["training"]["max_steps"])
    return {"epochs": epochs, "batches_per_epoch": n_batches, "steps": steps}


def main(timings_path: str, output_path: str) -> None:
    timings = dict(line.split("\t") for line in Path(timings_path).read_text().splitlines())
    config_path = Path("training/model-best/config.cfg")
    config = load_config(config_path, interpolate=False)
    summary: Dict[str, Any] = {
        "command": " ".join(["bash run_own_data.sh", Path(output_path).stem, *sys.argv[3:]]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "torch_threads": os.environ.get("OMP_NUM_THREADS", "default"),
        "encoder": config["components"]["transformer"]["model"]["name"],
        **run_length(config_path),
        "seconds": {step: int(s) for step, s in timings.items()},
        "dev": scores(Path("metrics/dev.json")),
        "test": scores(Path("metrics/test.json")),
    }
    wheel = next(Path("packages").glob("*/dist/*.whl"), None)
    if wheel is not None:
        summary["package"] = {
            "wheel": wheel.name,
            "megabytes": round(wheel.stat().st_size / 2**20, 1),
        }
    Path(output_path).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
