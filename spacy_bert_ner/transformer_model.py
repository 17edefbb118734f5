"""The transformer model the package registers (`spacy_bert_ner.TransformerModel.v1`):
spacy-transformers' `TransformerModel` with a faster split of its output by doc, a faster
prediction and a faster optimizer step.
"""

from typing import Any, Callable, Dict, List, Tuple, cast

import torch
from spacy.tokens import Doc
from spacy_transformers.data_classes import FullTransformerBatch, TransformerData
from spacy_transformers.layers import TransformerModel
from spacy_transformers.layers import transformer_model as upstream
from thinc.api import Optimizer, torch2xp
from transformers.file_utils import ModelOutput

from .inference import predict_lock
from .optimizers import update_all


class FastTransformerModel(TransformerModel):
    """spacy-transformers' `TransformerModel`, with three changes:

    - Its output is split by doc as it is made (`forward`, `split_by_doc`), without the dict of
      every token of the batch that spacy-transformers' split builds (a twentieth of a training
      step once the encoder is fast). The split is the same.
    - `predict` runs under `torch.inference_mode` (no autograd bookkeeping at all: ~10% faster on
      CPU than the `no_grad` thinc uses), one thread at a time (`inference.predict_lock`).
      `predict` is what the component calls to annotate docs (`nlp(text)`, `nlp.pipe`,
      evaluation during training); `begin_update`, the training path, is unchanged.
    - `finish_update` updates all the encoder's parameters in one fused step when the optimizer
      is `spacy_bert_ner.Adam.v1` or `.v2` (`optimizers.update_all`: thinc's Adam arithmetic in
      torch's fused AdamW kernel, on CPU and GPU), and as thinc does otherwise.

    A subclass rather than a wrapping thinc layer, because the `transformer` component and its
    listeners use the model's own attributes (`set_transformer`, `tokenizer`, `transformer`, the
    init configs) and spacy-transformers checks for a `TransformerModel`. Defined at module level,
    so the pipeline pickles (`nlp.pipe(n_process=...)` under the spawn start method).

    `TransformerModel.copy()` (used by `nlp.replace_listeners`) returns a plain `TransformerModel`:
    a copied transformer runs as spacy-transformers' own does.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._func = forward

    def predict(self, X: Any) -> Any:
        with predict_lock(), torch.inference_mode():
            return super().predict(X)

    def finish_update(self, optimizer: Optimizer) -> None:
        if not update_all(self, optimizer):
            super().finish_update(optimizer)


def forward(
    model: TransformerModel, docs: List[Doc], is_train: bool
) -> Tuple[FullTransformerBatch, Callable]:
    """spacy-transformers' forward pass, with its output's `doc_data` filled by `split_by_doc`."""
    output, backprop = upstream.forward(model, docs, is_train)
    output.cached_doc_data = split_by_doc(output)
    return output, backprop


def split_by_doc(batch: FullTransformerBatch) -> List[TransformerData]:
    """`FullTransformerBatch.split_by_doc`: the batch's output as one `TransformerData` per doc.

    spacy-transformers finds where each doc's tokens start in the batch's alignment through a dict
    from every token of the batch to its position (`align.get_token_positions`), which numbers the
    tokens of each doc that has spans, in the order of the docs' first spans. The position of a
    doc's token i is then i plus the length of the docs numbered before it, which is computed
    here instead; everything else is spacy-transformers' code.
    """
    # Where each doc's tokens start, numbered as get_token_positions does (docs by identity).
    offsets: Dict[int, int] = {}
    n_tokens = 0
    for doc_spans in batch.spans:
        for span in doc_spans:
            if id(span.doc) not in offsets:
                offsets[id(span.doc)] = n_tokens
                n_tokens += len(span.doc)

    # Convert all outputs to XP arrays.
    xp_model_output = ModelOutput()
    n_spans = cast(torch.Tensor, batch.model_output["last_hidden_state"]).shape[0]
    for key, output in batch.model_output.items():
        if isinstance(output, torch.Tensor):
            xp_model_output[key] = torch2xp(output)
        elif (
            isinstance(output, tuple)
            and all(isinstance(t, torch.Tensor) for t in output)
            and all(t.shape[0] == n_spans for t in output)
        ):
            xp_model_output[key] = [torch2xp(t) for t in output]

    # Split outputs per Doc.
    outputs = []
    start = 0
    prev_tokens = 0
    for doc_spans in batch.spans:
        if len(doc_spans) == 0 or len(doc_spans[0]) == 0:
            outputs.append(TransformerData.empty())
            continue
        first, last = doc_spans[0], doc_spans[-1]
        start_i = offsets[id(first.doc)] + first.start
        end_i = offsets[id(last.doc)] + last[-1].i + 1
        end = start + len(doc_spans)
        doc_tokens = batch.wordpieces[start:end]
        doc_align = batch.align[start_i:end_i]
        doc_align.data = doc_align.data - prev_tokens
        model_output = ModelOutput()
        for key, output in xp_model_output.items():
            if not isinstance(output, list):
                model_output[key] = output[start:end]
            else:
                model_output[key] = [t[start:end] for t in output]
        outputs.append(
            TransformerData(wordpieces=doc_tokens, model_output=model_output, align=doc_align)
        )
        prev_tokens += doc_tokens.input_ids.size
        start += len(doc_spans)
    return outputs
