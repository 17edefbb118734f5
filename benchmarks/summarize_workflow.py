"""Collect a workflow run's figures (scores, timings, speed, package size) into one small JSON."""

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any, Dict

from thinc.api import Config


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


def main(timings_path: str, output_path: str) -> None:
    timings = dict(line.split("\t") for line in Path(timings_path).read_text().splitlines())
    wheel = next(Path("packages").glob("*/dist/*.whl"))
    config = Config().from_disk("training/model-best/config.cfg", interpolate=False)
    summary = {
        "command": "bash benchmarks/run_workflow.sh " + " ".join(sys.argv[3:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "encoder": config["components"]["transformer"]["model"]["name"],
        "epochs": config["training"]["max_epochs"],
        "seconds": {step: int(s) for step, s in timings.items()},
        "dev": scores(Path("metrics/dev.json")),
        "test": scores(Path("metrics/test.json")),
        "package": {"wheel": wheel.name, "megabytes": round(wheel.stat().st_size / 2**20, 1)},
    }
    Path(output_path).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
