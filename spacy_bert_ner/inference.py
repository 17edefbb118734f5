"""Inference speed-ups, in one place: the transformer predicts under `torch.inference_mode` (one
thread at a time), and `quantize` / `load(quantized=True)` turn the encoder's Linear layers to int8.

Neither changes training: `InferenceModeTransformerModel` only overrides `predict`, which spaCy
calls to annotate and evaluate, never to update; a quantized pipeline is for inference only.
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

# thinc's `PyTorchShim.predict` puts the torch module in eval mode, runs it, and puts it back in
# train mode: a forward in another thread meanwhile would run with dropout. Predictions of one
# process take turns on this lock, so each runs in eval mode (a web server calling `nlp.pipe`
# from threads gets the same entities as a single thread).
_PREDICT_LOCK = threading.Lock()


def _new_predict_lock() -> None:
    """A forked child starts with a free lock, even if a parent thread held it at the fork."""
    global _PREDICT_LOCK
    _PREDICT_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_predict_lock)


class InferenceModeTransformerModel(TransformerModel):
    """spacy-transformers' `TransformerModel`, whose `predict` runs under `torch.inference_mode`
    (no autograd bookkeeping at all: ~10% faster on CPU than the `no_grad` thinc uses), one thread
    at a time (`_PREDICT_LOCK`).

    A subclass rather than a wrapping thinc layer, because the `transformer` component and its
    listeners use the model's own attributes (`set_transformer`, `tokenizer`, `transformer`, the
    init configs) and spacy-transformers checks for a `TransformerModel`. `predict` is what the
    component calls to annotate docs (`nlp(text)`, `nlp.pipe`, evaluation during training);
    `begin_update`, the training path, is unchanged. Defined at module level, so the pipeline
    pickles (`nlp.pipe(n_process=...)` under the spawn start method).

    `TransformerModel.copy()` (used by `nlp.replace_listeners`) returns a plain `TransformerModel`:
    a copied transformer predicts under `no_grad`, as spacy-transformers' own does.
    """

    def predict(self, X: Any) -> Any:
        with _PREDICT_LOCK, torch.inference_mode():
            return super().predict(X)


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
    """`spacy.load`, optionally with the encoder quantized to int8 for faster CPU inference."""
    nlp = spacy.load(name, **kwargs)
    return quantize(nlp) if quantized else nlp
