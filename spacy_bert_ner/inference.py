"""Loading a pipeline to run it, in one place: `load` (`spacy_bert_ner.load`), `spacy.load` with
the encoder's Linear layers in int8 on request (`quantize`, for CPU inference only) and the larger
batches a pipeline gets on a GPU (`gpu_batching`); and `load_pipeline`, what the commands that run
a pipeline use: on the CPU or a GPU, with a one-line message (`SetupError`) for each way that can
fail instead of a traceback from deep inside spaCy or CuPy.
"""

import warnings
from pathlib import Path
from typing import Any, Optional, Union

import spacy
import torch
from spacy.language import Language
from spacy_transformers.layers import TransformerModel
from thinc.api import get_current_ops


class SetupError(RuntimeError):
    """What a run needs is not there (the pipeline, a GPU, an optional dependency); the message
    says what to install or pass."""


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
            encoder = node.transformer if isinstance(node, TransformerModel) else None
            if encoder is not None:
                # In place: the shim's forward and its saved-model reference share one module.
                # torch.ao's eager quantization is deprecated in favour of torchao, but works.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    torch.ao.quantization.quantize_dynamic(
                        encoder,
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


def use_gpu(gpu_id: int) -> None:
    """`spacy.require_gpu`, with a one-line message when no GPU (or CuPy) is there."""
    try:
        spacy.require_gpu(gpu_id)
    except Exception as err:
        raise SetupError(
            f"--gpu-id {gpu_id}: no usable GPU ({err}). Install CuPy for your CUDA version "
            "(pip install cupy-cuda12x) and PyTorch with CUDA, or drop --gpu-id for the CPU."
        ) from None


def load_pipeline(model: str, *, quantized: bool = False, gpu_id: Optional[int] = None) -> Language:
    """What the commands that run a pipeline (`annotate`, `analyze`, `distill`) load it with:
    `load` on GPU `gpu_id` (None or -1: the CPU), with a one-line message (`SetupError`) for a
    name that is no pipeline. The GPU is chosen first, so the weights are loaded onto it."""
    if gpu_id is not None and gpu_id >= 0:
        use_gpu(gpu_id)
    try:
        return load(model, quantized=quantized)
    except OSError as err:
        raise SetupError(
            f"Can't load the pipeline {model!r}: it is neither an installed pipeline package "
            f"nor a pipeline directory ({str(err).splitlines()[0]})."
        ) from None
