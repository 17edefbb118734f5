"""One `shipped.sh` run's figures as a small JSON: the run's length as its log states it, and the
test entity F1 of model-best (what `evaluate` and `package` use), model-last, and the package
installed into a fresh virtual environment.

    python summarize_shipped.py RUN_DIR OUTPUT.json WORKFLOW_SECONDS [the run's --vars ...]
"""

import json
import os
import platform
import sys
from pathlib import Path

import spacy
import torch
import transformers

import spacy_bert_ner
from spacy_bert_ner.loggers import read_log


def f(path: Path) -> float:
    return round(100 * json.loads(path.read_text())["ents_f"], 2)


def main(run_dir: str, output: str, seconds: str, *args: str) -> None:
    run = Path(run_dir)
    log = read_log(run / "training" / "log.jsonl")
    summary = {
        "name": Path(output).stem,
        "command": " ".join(["bash shipped.sh", Path(output).stem, *args]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "torch_threads": torch.get_num_threads(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "spacy": spacy.__version__,
            "transformers": transformers.__version__,
            "spacy_bert_ner": spacy_bert_ner.__version__,
        },
        "train": "/".join(Path(args[args.index("--vars.train") + 1]).parts[-2:]),
        "max_epochs": args[args.index("--vars.max_epochs") + 1]
        if "--vars.max_epochs" in args
        else "0 (derived)",
        "updates": log["updates"],
        "epochs": log["epochs"],
        "evaluations": len(log["evaluations"]),
        "best_step": log["best_step"],
        "test_f": {
            "model-best": f(run / "metrics" / "test.json"),
            "model-last": f(run / "metrics" / "test_last.json"),
            "installed": f(run / "metrics" / "test_installed.json"),
        },
        "workflow_seconds": int(seconds),
    }
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(output).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf8")
    print(json.dumps(summary["test_f"]))


if __name__ == "__main__":
    main(*sys.argv[1:])
