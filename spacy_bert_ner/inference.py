"""Inference settings, in one place: the lock that lets one prediction at a time put the transformer
in eval mode (`transformer_model.FastTransformerModel.predict` takes it), `quantize` /
`load(quantized=True)`, which turn the encoder's Linear layers to int8 (for inference only), and
the larger batches `load` gives a pipeline on a GPU (`gpu_batching`).
"""

import os
import threading
import warnings
from pathlib import Path
from typing import Any, Union

import spacy
import torch
from spacy.language import Language
from spacy_transformers.layers import TransformerModel
from thinc.api import get_current_ops

# thinc's `PyTorchShim.predict` puts the torch module in eval mode, runs it, and puts it back in
# train mode: a forward in another thread meanwhile would run with dropout. Predictions of one
# process take turns on this lock, so each runs in eval mode (a web server calling `nlp.pipe`
# from threads gets the same entities as a single thread).
_PREDICT_LOCK = threading.Lock()


def _after_fork_in_child() -> None:
    """A forked child (`nlp.pipe(texts, n_process=N)` on Linux) starts with a free prediction
    lock, even if a parent thread held it at the fork, and runs one torch thread: once the parent
    has used OpenMP's thread pool (loading or running a pipeline does), GNU libgomp hangs forever
    in a forked child's first multi-threaded operation. Spawned children import torch afresh and
    keep their threads."""
    global _PREDICT_LOCK
    _PREDICT_LOCK = threading.Lock()
    torch.set_num_threads(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def predict_lock() -> threading.Lock:
    """The lock predictions of this process take turns on (a new one in a forked child)."""
    return _PREDICT_LOCK


# Batching on a GPU: docs per `nlp.pipe` batch, and the most (padded) tokens the transformer
# encodes at once. The config's CPU values (512 docs, 1,024 tokens) leave a GPU idle: on an H100,
# 5,000 CoNLL-2003 sentences ran at 19,163 words/s with them and 36,420 with these, the fastest of
# six settings (benchmarks/results/gpu/inference_h100.json); on CPU, larger sub-batches are slower.
GPU_BATCH_SIZE = 2048
GPU_MAX_BATCH_ITEMS = 4096


def gpu_batching(nlp: Language) -> Language:
    """Set `nlp.batch_size` and each transformer's `max_batch_items` to the GPU values above."""
    nlp.batch_size = GPU_BATCH_SIZE
    for _, pipe in nlp.pipeline:
        if isinstance(getattr(pipe, "model", None), TransformerModel) and hasattr(pipe, "cfg"):
            pipe.cfg["max_batch_items"] = GPU_MAX_BATCH_ITEMS
    return nlp


def quantize(nlp: Language) -> Language:
    """Quantize the Linear layers of every transformer in the pipeline to int8 (dynamic
    quantization: weights stored in int8 with one scale per output channel, activations quantized
    on the fly). CPU only; a quantized pipeline is for inference, not for further training or
    saving. Per-channel scales kept CoNLL-2003 dev F1 within 0.3 of the float model (per-tensor
    scales lost 1.5; measured on the earlier default model, see README's speed table)."""
    from torch.ao.quantization import per_channel_dynamic_qconfig

    for _, pipe in nlp.pipeline:
        model = getattr(pipe, "model", None)
        if model is None or not hasattr(model, "walk"):
            continue
        for node in model.walk():
            shim = node.layers[0].shims[0] if isinstance(node, TransformerModel) else None
            if shim is not None and shim._model is not None:
                # In place: the shim's forward and its saved-model reference share one module.
                # torch.ao's eager quantization is deprecated in favour of torchao, but works.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    torch.ao.quantization.quantize_dynamic(
                        shim._model,
                        {torch.nn.Linear: per_channel_dynamic_qconfig},
                        inplace=True,
                    )
    return nlp


def load(name: Union[str, Path], *, quantized: bool = False, **kwargs: Any) -> Language:
    """`spacy.load`, optionally with the encoder quantized to int8 for faster CPU inference. On a
    GPU (`spacy.require_gpu()` called first), the pipeline gets `gpu_batching`."""
    nlp = spacy.load(name, **kwargs)
    if get_current_ops().device_type == "gpu":
        gpu_batching(nlp)
    return quantize(nlp) if quantized else nlp
