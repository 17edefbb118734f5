"""Do a GPU and the CPU find the same entities? One trained pipeline annotates the same CoNLL-2003
sentences in fp32 on the CPU and on the device (fp32, and fp16 autocast with --mixed-precision),
and the share of sentences whose entities are identical is reported (target: >= 99%).

    python benchmarks/device_agreement.py PIPELINE --gpu-id 0 [--n-sents 5000] [--output OUT.json]

With --gpu-id -1 both runs are on the CPU (a check of the script itself: 100%).
"""

import json
import platform
import time
from pathlib import Path
from typing import List, Tuple

import spacy
import torch
import typer
from inference_speed import sentences

import spacy_bert_ner

Entities = List[Tuple[int, int, str]]
OUTPUT = Path(__file__).parent / "work" / "gpu" / "device_agreement.json"


def annotate(pipeline: str, texts: List[str], mixed_precision: bool = False) -> List[Entities]:
    config = {"components": {"transformer": {"model": {"mixed_precision": mixed_precision}}}}
    nlp = spacy_bert_ner.load(pipeline, config=config)
    return [[(e.start_char, e.end_char, e.label_) for e in doc.ents] for doc in nlp.pipe(texts)]


def main(
    pipeline: str,
    gpu_id: int = typer.Option(0, help="The device to compare with the CPU (-1: the CPU)"),
    n_sents: int = typer.Option(5000, help="CoNLL-2003 sentences (test, then dev, then train)"),
    mixed_precision: bool = typer.Option(False, help="Also compare fp16 autocast on the device"),
    output: Path = typer.Option(OUTPUT, help="JSON file to write"),
) -> None:
    texts = sentences(n_sents)
    start = time.perf_counter()
    cpu = annotate(pipeline, texts)
    runs = {"cpu_fp32_seconds": round(time.perf_counter() - start, 1)}
    if gpu_id >= 0:
        spacy.require_gpu(gpu_id)
    device = torch.cuda.get_device_name(gpu_id) if gpu_id >= 0 else "cpu"
    result = {"pipeline": pipeline, "sentences": len(texts), "device": device}
    for name, mixed in [("fp32", False), ("fp16", True)][: 2 if mixed_precision else 1]:
        start = time.perf_counter()
        other = annotate(pipeline, texts, mixed_precision=mixed)
        same = sum(a == b for a, b in zip(cpu, other))
        result[name] = {
            "identical_sentences_pct": round(100 * same / len(texts), 2),
            "seconds": round(time.perf_counter() - start, 1),
        }
        print(f"{device} {name}: entities identical to the CPU's in {same} of {len(texts)}")
    result.update(runs, python=platform.python_version(), torch=torch.__version__)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    typer.run(main)
