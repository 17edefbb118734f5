"""`python -m spacy_bert_ner convert` on 5, 50 and 500 MB of CoNLL: peak resident memory and time.

    python benchmarks/convert_memory.py --sizes 5,50,500

The input is CoNLL-2003 train repeated to each size (benchmarks/work/, git-ignored). Each size is
converted by the public CLI in a fresh process into a directory of .spacy shards (bounded memory;
`os.wait4` gives the process's peak RSS); the smallest also into one .spacy file, whose DocBin
grows with the input. The figures go under "convert" in benchmarks/work/results/memory.json, which
`record.py convert-memory` reduces to results/convert_memory.json.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import typer

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "conll2003" / "train.txt"
WORK = ROOT / "benchmarks" / "work" / "convert_memory"
RESULTS = ROOT / "benchmarks" / "work" / "results" / "memory.json"
MB = 1_000_000
MACHINE = (
    "2 CPU cores shared with other jobs: wall seconds depend on their load; cpu_seconds is the "
    "process's own user+sys time"
)

app = typer.Typer(add_completion=False)


def make_input(size_mb: int) -> Path:
    """CoNLL-2003 train repeated to at least `size_mb` MB (made once)."""
    path = WORK / f"conll-{size_mb}mb.txt"
    if path.exists() and path.stat().st_size >= size_mb * MB:
        return path
    WORK.mkdir(parents=True, exist_ok=True)
    data = DATA.read_bytes().rstrip(b"\n") + b"\n\n"  # the file ends without a newline
    with open(path, "wb") as file:
        for _ in range(-(-size_mb * MB // len(data))):
            file.write(data)
    return path


def run_convert(source: Path, output: Path) -> Dict[str, Any]:
    """Convert `source` to `output` with the CLI; its wall time, peak RSS and what it wrote."""
    command = [sys.executable, "-m", "spacy_bert_ner", "convert", str(source), str(output)]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout is not None
    log = process.stdout.read().decode("utf8", "replace")
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(command)} failed:\n{log}")
    plain = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", log).split())  # no colours, no wrapping
    files = sorted(output.iterdir()) if output.is_dir() else [output]
    figures = {
        "input_mb": round(source.stat().st_size / MB, 1),
        "output": "directory" if output.is_dir() else "one file",
        "files": len(files),
        "output_mb": round(sum(f.stat().st_size for f in files) / MB, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
        "seconds": round(seconds, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "mb_per_second": round(source.stat().st_size / MB / seconds, 2),
        "summary": re.search(r"\d+ docs, \d+ sentences, \d+ tokens, \d+ entities", plain).group(),
    }
    shutil.rmtree(output) if output.is_dir() else output.unlink()
    return figures


@app.command()
def main(
    sizes: str = typer.Option("5,50,500", help="Input sizes in MB, comma-separated"),
    output: Path = typer.Option(RESULTS, help="JSON file to update (key convert)"),
) -> None:
    """Peak memory and time of `convert` by input size."""
    runs: List[Dict[str, Any]] = []
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "one-line.txt").write_text("Paris B-LOC\n", encoding="utf8")
    baseline = run_convert(WORK / "one-line.txt", WORK / "one-line")  # imports only
    print(f"baseline (a one-line file): {baseline['peak_rss_mb']} MB", flush=True)
    size_list = [int(size) for size in sizes.split(",")]
    for i, size in enumerate(size_list):
        source = make_input(size)
        figures = run_convert(source, WORK / f"out-{size}mb")
        print(json.dumps(figures), flush=True)
        runs.append(figures)
        if i == 0 and size <= 50:  # one DocBin of 500 MB would take several GB
            one_file = run_convert(source, WORK / f"out-{size}mb.spacy")
            print(json.dumps(one_file), flush=True)
            runs.append(one_file)
    results = json.loads(output.read_text()) if output.exists() else {}
    results["convert"] = {
        "command": "python benchmarks/convert_memory.py --sizes " + sizes,
        "input": "CoNLL-2003 train (4 columns, IOB2) repeated; convert's defaults (-n 10)",
        "machine": MACHINE,
        "baseline_peak_rss_mb": baseline["peak_rss_mb"],
        "runs": runs,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    app()
