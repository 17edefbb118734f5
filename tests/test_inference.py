from pathlib import Path

import pytest
import spacy
import torch
from synthetic import make_sentences

from spacy_bert_ner import load, quantize
from spacy_bert_ner.transformer_model import FastTransformerModel


def ents(doc):
    return [(e.start, e.end, e.label_) for e in doc.ents]


def texts(n: int):
    # Sentences of very different lengths, so sorting reorders them.
    return [" ".join(words * (1 + i % 4)) for i, (words, _) in enumerate(make_sentences(n, 5))]


def test_quantized_pipeline_agrees(pipeline_path: Path) -> None:
    nlp = spacy.load(pipeline_path)
    quantized = load(pipeline_path, quantized=True)
    hf_model = quantized.get_pipe("transformer").model.transformer
    linear_types = {type(m).__module__ for m in hf_model.modules() if "Linear" in type(m).__name__}
    assert linear_types and all("quantized" in t for t in linear_types)
    assert not any(isinstance(m, torch.nn.Linear) for m in hf_model.modules())
    sample = texts(30)
    expected = [ents(doc) for doc in nlp.pipe(sample)]
    assert sum(e == ents(doc) for e, doc in zip(expected, quantized.pipe(sample))) >= 27
    assert any(expected)


def test_quantize_after_replace_listeners(pipeline_path: Path) -> None:
    nlp = spacy.load(pipeline_path)
    nlp.replace_listeners("transformer", "bert_ner", ["model.tok2vec"])
    nlp.remove_pipe("transformer")
    quantize(nlp)
    modules = nlp.get_pipe("bert_ner").model.walk()
    shims = [s for node in modules for s in node.shims]
    assert shims and all(
        not any(isinstance(m, torch.nn.Linear) for m in shim._model.modules()) for shim in shims
    )
    doc = nlp("john smith works for acme corp in paris .")
    assert [(e.text, e.label_) for e in doc.ents][0] == ("john smith", "PER")


def test_prediction_runs_in_inference_mode_and_training_does_not(pipeline_path: Path) -> None:
    nlp = spacy.load(pipeline_path)
    model = nlp.get_pipe("transformer").model
    assert isinstance(model, FastTransformerModel)
    modes: list = []
    layer = model.transformer.encoder.layer[-1]
    handle = layer.register_forward_pre_hook(
        lambda module, args: modes.append(torch.is_inference_mode_enabled())
    )
    try:
        list(nlp.pipe(texts(3)))
        predicted = len(modes)
        model.begin_update([nlp.make_doc(text) for text in texts(3)])
    finally:
        handle.remove()
    assert predicted > 0 and all(modes[:predicted])
    assert len(modes) > predicted and not any(modes[predicted:])


def spans_with_scores(doc):
    group = doc.spans["bert_ner"]
    return [(s.start, s.end, s.label_, float(p)) for s, p in zip(group, group.attrs["scores"])]


def test_pipeline_pickles(pipeline_path: Path) -> None:
    """`nlp.pipe(n_process=...)` under spawn (macOS, Windows) pickles the pipeline."""
    import pickle

    nlp = spacy.load(pipeline_path)
    copy = pickle.loads(pickle.dumps(nlp))
    sample = texts(10)
    assert [ents(d) for d in copy.pipe(sample)] == [ents(d) for d in nlp.pipe(sample)]


def test_two_threads_predict_like_one(pipeline_path: Path) -> None:
    """thinc's PyTorchShim.predict sets the torch module back to train mode after each forward.
    A second thread's prediction is started in the middle of the first one's forward (a hook on
    the encoder's last layer): without the prediction lock it ran to completion there, and the
    first forward's last layer ran with dropout."""
    import threading

    nlp = spacy.load(pipeline_path)
    sample = texts(8)
    expected = [spans_with_scores(d) for d in nlp.pipe(sample)]
    assert any(expected)
    other: list = []
    second = threading.Thread(target=lambda: other.extend(nlp.pipe(sample)))

    def start_second_prediction(module, args):
        if not second.is_alive() and not other:
            second.start()
            second.join(timeout=2.0)  # with the lock it waits for this forward to end

    layer = nlp.get_pipe("transformer").model.transformer.encoder.layer[-1]
    handle = layer.register_forward_pre_hook(start_second_prediction)
    try:
        first = [spans_with_scores(d) for d in nlp.pipe(sample)]
        second.join(timeout=60)
    finally:
        handle.remove()
    assert first == expected
    assert [spans_with_scores(d) for d in other] == expected


def test_two_pipelines_predict_at_once(pipeline_path: Path) -> None:
    """Each model has its own prediction lock: a second pipeline's prediction runs while the
    first pipeline's forward is under way (one process-wide lock made it wait for it)."""
    import threading

    first_nlp, second_nlp = spacy.load(pipeline_path), spacy.load(pipeline_path)
    sample = texts(4)
    expected = [ents(d) for d in second_nlp.pipe(sample)]
    other: list = []
    second = threading.Thread(target=lambda: other.extend(second_nlp.pipe(sample)))
    finished_during_first: list = []

    def run_second_prediction(module, args):
        if not second.is_alive() and not other:
            second.start()
            second.join(timeout=30.0)
            finished_during_first.append(not second.is_alive())

    layer = first_nlp.get_pipe("transformer").model.transformer.encoder.layer[-1]
    handle = layer.register_forward_pre_hook(run_second_prediction)
    try:
        list(first_nlp.pipe(sample))
        second.join(timeout=60)
    finally:
        handle.remove()
    assert finished_during_first == [True]
    assert [ents(d) for d in other] == expected


FORK_THREADS_SCRIPT = """
import os, sys

import torch

torch.set_num_threads(2)
import spacy_bert_ner  # noqa: F401

read, write = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(write, str(torch.get_num_threads()).encode())
    os._exit(0)
os.waitpid(pid, 0)
print(os.read(read, 16).decode())
"""


def test_importing_the_package_leaves_forked_children_alone(tmp_path: Path) -> None:
    """Importing spacy_bert_ner registers no at-fork hook: a child that the importer forks keeps
    its torch threads (a hook pinned every forked child to one thread). Only a forked child
    that predicts with a model switches to one thread (`test_forked_n_process_from_python`)."""
    import subprocess
    import sys

    script = tmp_path / "fork.py"
    script.write_text(FORK_THREADS_SCRIPT, encoding="utf8")
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "2"


def test_load_batches_more_on_a_gpu(pipeline_path: Path, monkeypatch) -> None:
    """`load` keeps the config's batching on CPU, and gives a GPU larger batches."""
    from types import SimpleNamespace

    from spacy_bert_ner import inference

    def batching(nlp):
        return nlp.batch_size, nlp.get_pipe("transformer").cfg["max_batch_items"]

    on_cpu = inference.load(pipeline_path)
    assert batching(on_cpu) == batching(spacy.load(pipeline_path)) != (2048, 4096)
    monkeypatch.setattr(inference, "get_current_ops", lambda: SimpleNamespace(device_type="gpu"))
    on_gpu = inference.load(pipeline_path)
    assert batching(on_gpu) == (inference.GPU_BATCH_SIZE, inference.GPU_MAX_BATCH_ITEMS)
    assert batching(on_gpu) == (2048, 4096)


FORKED_PIPE_SCRIPT = """
import json, multiprocessing, sys

import spacy, torch

if __name__ == "__main__":
    multiprocessing.set_start_method("fork", force=True)
    pipeline, texts = sys.argv[1], json.loads(sys.argv[2])
    torch.set_num_threads(2)
    nlp = spacy.load(pipeline)
    single = [[(e.start_char, e.end_char, e.label_) for e in doc.ents] for doc in nlp.pipe(texts)]
    forked = nlp.pipe(texts, n_process=2, batch_size=4)
    assert [[(e.start_char, e.end_char, e.label_) for e in doc.ents] for doc in forked] == single
    print("same", sum(map(len, single)))
"""


def test_forked_n_process_from_python(pipeline_path: Path, tmp_path: Path) -> None:
    """`nlp.pipe(texts, n_process=2)` with forked workers, after the parent used torch's threads
    (GNU libgomp hung in the workers' first multi-threaded operation; a hang fails after the
    timeout), gives the single process's entities."""
    import json
    import os
    import subprocess
    import sys

    script = tmp_path / "run.py"
    script.write_text(FORKED_PIPE_SCRIPT, encoding="utf8")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    args = [sys.executable, str(script), str(pipeline_path), json.dumps(texts(16))]
    try:
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("nlp.pipe(n_process=2) with forked workers hung")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("same ")
