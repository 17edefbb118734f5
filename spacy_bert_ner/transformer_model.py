"""The transformer model the package registers (`spacy_bert_ner.TransformerModel.v1`):
spacy-transformers' `TransformerModel` with a faster forward pass (word-piece strings read from
the tokenizer, alignment and split by doc in array operations over the batch), a faster
prediction and a faster optimizer step.
"""

from typing import Any, Callable, Dict, List, Tuple, cast

import numpy
import torch
from spacy.attrs import IDX, LENGTH
from spacy.tokens import Doc, Span
from spacy_transformers.align import get_alignment
from spacy_transformers.data_classes import FullTransformerBatch, TransformerData, WordpieceBatch
from spacy_transformers.layers import TransformerModel
from spacy_transformers.layers.transformer_model import huggingface_tokenize
from spacy_transformers.truncate import truncate_oversize_splits
from spacy_transformers.util import log_batch_size, log_gpu_memory, maybe_flush_pytorch_cache
from thinc.api import Optimizer, torch2xp
from thinc.types import Ints1d, Ints3d, Ragged
from transformers import BatchEncoding
from transformers.file_utils import ModelOutput

from .inference import predict_lock
from .optimizers import update_all


class FastTransformerModel(TransformerModel):
    """spacy-transformers' `TransformerModel`, with three changes:

    - Its forward pass (`forward`) is spacy-transformers', with the word pieces aligned to the
      tokens (`align_word_pieces`) and the output split by doc (`split_by_doc`) in array
      operations, where spacy-transformers builds a dict of every token of the batch and a set
      per token, and the word-piece strings read from a fast tokenizer's encodings (`tokenize`);
      the results are the same.
    - `predict` runs under `torch.inference_mode` (no autograd bookkeeping at all: ~10% faster on
      CPU than the `no_grad` thinc uses), one thread at a time (`inference.predict_lock`).
      `predict` is what the component calls to annotate docs (`nlp(text)`, `nlp.pipe`,
      evaluation during training); `begin_update`, the training path, keeps autograd.
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
    """spacy-transformers' forward pass (`spacy_transformers.layers.transformer_model.forward`),
    with the texts tokenized by `tokenize`, the word pieces aligned to tokens by
    `align_word_pieces` and the output split by doc as it is made (`split_by_doc`). The rest is
    spacy-transformers' code."""
    tokenizer = model.tokenizer
    get_spans = model.attrs["get_spans"]
    transformer = model.layers[0]
    logger = model.attrs.get("logger")  # spacy-transformers' `set_logger`, to debug GPU memory

    nested_spans = get_spans(docs)
    flat_spans = [span for doc_spans in nested_spans for span in doc_spans]
    maybe_flush_pytorch_cache(chance=model.attrs.get("flush_cache_chance", 0))
    if logger:
        log_gpu_memory(logger, "begin forward")
    batch_encoding = tokenize(tokenizer, [span.text for span in flat_spans])
    wordpieces = WordpieceBatch.from_batch_encoding(batch_encoding)
    if logger:
        log_batch_size(logger, wordpieces, is_train)
    if "offset_mapping" in batch_encoding:
        align = align_word_pieces(flat_spans, batch_encoding["offset_mapping"])
    else:
        align = get_alignment(flat_spans, wordpieces.strings, tokenizer.all_special_tokens)
    wordpieces, align = truncate_oversize_splits(wordpieces, align, tokenizer.model_max_length)
    model_output, bp_tensors = transformer(wordpieces, is_train)
    if logger:
        log_gpu_memory(logger, "after forward")
    output = FullTransformerBatch(
        spans=nested_spans, wordpieces=wordpieces, model_output=model_output, align=align
    )
    output.cached_doc_data = split_by_doc(output)

    def backprop_transformer(d_output: FullTransformerBatch) -> List[Doc]:
        if logger:
            log_gpu_memory(logger, "Begin backprop")
        bp_tensors(d_output.model_output)
        if logger:
            log_gpu_memory(logger, "After backprop")
        return docs

    return output, backprop_transformer


def tokenize(tokenizer: Any, texts: List[str]) -> BatchEncoding:
    """spacy-transformers' `huggingface_tokenize`, with a fast tokenizer's word-piece strings read
    from its encodings, where spacy-transformers converts the ids back to strings, a sequence at a
    time (a tenth of the host's work in prediction once the encoder is fast). The same strings."""
    if not getattr(tokenizer, "is_fast", False):  # a PreTrainedTokenizerFast has encodings
        return huggingface_tokenize(tokenizer, texts)
    token_data = tokenizer(
        texts,
        add_special_tokens=True,
        return_attention_mask=True,
        return_offsets_mapping=True,
        return_tensors="np",
        return_token_type_ids=None,
        padding="longest",
    )
    token_data["input_texts"] = [encoding.tokens for encoding in token_data.encodings]
    token_data["pad_token"] = tokenizer.pad_token
    return token_data


def align_word_pieces(spans: List[Span], offset_mapping: Ints3d) -> Ragged:
    """`spacy_transformers.align.get_alignment_via_offset_mapping`: for each token of the spans'
    docs (numbered by `doc_offsets`), the indices of the word pieces that overlap
    it in the batch's flattened (padded) word pieces, in array operations over the whole batch
    instead of a dict of every token and a set per token.

    As spacy-transformers: a token owns its characters and the one after it (a following space),
    a later token taking a shared character; a word piece overlaps each token that owns one of
    its characters (special tokens, with no characters, overlap none).
    """
    if len(spans) != len(offset_mapping):
        raise ValueError("Cannot align batches of different sizes.")
    offsets, n_tokens = doc_offsets(spans)
    if not spans or not n_tokens:
        empty = cast(Ints1d, numpy.zeros(0, dtype="i"))
        return Ragged(empty, cast(Ints1d, numpy.zeros(n_tokens, dtype="i")))
    # (IDX, LENGTH) of every token of the batch's docs, numbered as `doc_offsets` numbers them.
    docs = {id(span.doc): span.doc for span in spans}
    token_chars = numpy.concatenate(
        [doc.to_array([IDX, LENGTH]).reshape(-1, 2) for doc in docs.values()]
    ).astype("int64")
    # The tokens of every span, one after the other: their numbers and the characters they own
    # within their span's text (from their first character to the one after them).
    span_lengths = numpy.asarray([len(span) for span in spans], dtype="int64")
    span_firsts = numpy.asarray([offsets[id(span.doc)] + span.start for span in spans], "int64")
    span_stops = numpy.cumsum(span_lengths)  # where each span's tokens end in `token`
    span_of_token = numpy.repeat(numpy.arange(len(spans)), span_lengths)
    token = numpy.arange(len(span_of_token)) + numpy.repeat(
        span_firsts - (span_stops - span_lengths), span_lengths
    )
    starts = token_chars[token, 0] - token_chars[span_firsts, 0][span_of_token]
    ends = starts + token_chars[token, 1]
    # Each span's characters, 0 to the end of its last token, get a range of their own on one
    # axis (`base`), so that one search finds the owner of every character of the batch.
    span_ends = numpy.zeros(len(spans), dtype="int64")
    span_ends[span_lengths > 0] = ends[span_stops[span_lengths > 0] - 1]
    widths = numpy.where(span_lengths > 0, span_ends + 1, 0)
    base = numpy.cumsum(widths) - widths
    # Each word piece's characters within its span's text (and the one after it).
    wp_offsets = numpy.asarray(offset_mapping, dtype="int64").reshape(len(spans), -1, 2)
    n_pieces = wp_offsets.shape[1]
    limit = span_ends[:, None] + 1
    first = numpy.clip(wp_offsets[:, :, 0], 0, limit)
    n_chars = numpy.maximum(numpy.clip(wp_offsets[:, :, 1], 0, limit) - first, 0)
    n_chars[span_lengths == 0] = 0
    first, n_chars = first.ravel(), n_chars.ravel()
    piece = numpy.repeat(numpy.arange(len(n_chars)), n_chars)
    char = numpy.arange(len(piece)) - numpy.repeat(numpy.cumsum(n_chars) - n_chars, n_chars)
    char += numpy.repeat(first + base.repeat(n_pieces), n_chars)
    # The owner of a character: the last token starting at or before it, if it reaches it.
    owner = numpy.searchsorted(starts + base[span_of_token], char, side="right") - 1
    owned = char <= ends[owner] + base[span_of_token[owner]]
    # Sort and deduplicate (token, piece) pairs: a token seen by overlapping spans once.
    n_all = len(n_chars)
    pairs = numpy.unique(token[owner[owned]] * n_all + piece[owned])
    lengths = numpy.bincount(pairs // n_all, minlength=n_tokens)
    flat = pairs % n_all
    return Ragged(cast(Ints1d, flat.astype("i")), cast(Ints1d, lengths.astype("i")))


def doc_offsets(spans: List[Span]) -> Tuple[Dict[int, int], int]:
    """Where each doc's tokens start in a batch's alignment (by `id` of the doc), and the number
    of tokens: spacy-transformers' numbering (`align.get_token_positions`), every token of each
    doc that has spans, docs in the order of their first span, each doc once."""
    offsets: Dict[int, int] = {}
    n_tokens = 0
    for span in spans:
        if id(span.doc) not in offsets:
            offsets[id(span.doc)] = n_tokens
            n_tokens += len(span.doc)
    return offsets, n_tokens


def split_by_doc(batch: FullTransformerBatch) -> List[TransformerData]:
    """`FullTransformerBatch.split_by_doc`: the batch's output as one `TransformerData` per doc.

    spacy-transformers finds where each doc's tokens start in the batch's alignment through a dict
    from every token of the batch to its position (`align.get_token_positions`), which numbers the
    tokens of each doc that has spans, in the order of the docs' first spans. The position of a
    doc's token i is then i plus the length of the docs numbered before it, which is computed
    here instead; everything else is spacy-transformers' code.
    """
    offsets, _ = doc_offsets([span for doc_spans in batch.spans for span in doc_spans])

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
