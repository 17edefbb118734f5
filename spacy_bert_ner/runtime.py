"""Loading a pipeline to run it, for the commands that run one (`annotate`, `analyze`): by name or
directory, on the CPU or a GPU, with a one-line message for each way that can fail, instead of a
traceback from deep inside spaCy or CuPy."""

from typing import Optional

import spacy
from spacy.language import Language

from .inference import load


class SetupError(RuntimeError):
    """What a run needs is not there (the pipeline, a GPU, an optional dependency); the message
    says what to install or pass."""


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
    """`inference.load` on GPU `gpu_id` (None or -1: the CPU), with a one-line message for a name
    that is no pipeline. The GPU is chosen first, so the weights are loaded onto it."""
    if gpu_id is not None and gpu_id >= 0:
        use_gpu(gpu_id)
    try:
        return load(model, quantized=quantized)
    except OSError as err:
        raise SetupError(
            f"Can't load the pipeline {model!r}: it is neither an installed pipeline package "
            f"nor a pipeline directory ({str(err).splitlines()[0]})."
        ) from None
