"""The transformer model the package registers (`spacy_bert_ner.TransformerModel.v1`):
spacy-transformers' `TransformerModel` with a faster prediction and a faster optimizer step.
"""

from typing import Any

import torch
from spacy_transformers.layers import TransformerModel
from thinc.api import Optimizer

from .inference import predict_lock
from .optimizers import update_all


class FastTransformerModel(TransformerModel):
    """spacy-transformers' `TransformerModel`, with two overrides:

    - `predict` runs under `torch.inference_mode` (no autograd bookkeeping at all: ~10% faster on
      CPU than the `no_grad` thinc uses), one thread at a time (`inference.predict_lock`).
      `predict` is what the component calls to annotate docs (`nlp(text)`, `nlp.pipe`,
      evaluation during training); `begin_update`, the training path, is unchanged.
    - `finish_update` updates all the encoder's parameters in one multi-tensor step when the
      optimizer is `spacy_bert_ner.Adam.v1` or `.v2` (`optimizers.update_all`: thinc's Adam
      arithmetic, without a host-device synchronisation per parameter; on a GPU, and on CPU for
      v2's layer-wise decay and averages), and as thinc does otherwise.

    A subclass rather than a wrapping thinc layer, because the `transformer` component and its
    listeners use the model's own attributes (`set_transformer`, `tokenizer`, `transformer`, the
    init configs) and spacy-transformers checks for a `TransformerModel`. Defined at module level,
    so the pipeline pickles (`nlp.pipe(n_process=...)` under the spawn start method).

    `TransformerModel.copy()` (used by `nlp.replace_listeners`) returns a plain `TransformerModel`:
    a copied transformer predicts under `no_grad`, as spacy-transformers' own does.
    """

    def predict(self, X: Any) -> Any:
        with predict_lock(), torch.inference_mode():
            return super().predict(X)

    def finish_update(self, optimizer: Optimizer) -> None:
        if not update_all(self, optimizer):
            super().finish_update(optimizer)
