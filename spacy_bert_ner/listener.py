"""The transformer listener, with a batch id computed in array operations.

spacy-transformers' `TransformerListener` checks, at every training step, that it is handed the
docs the transformer encoded, by comparing a batch id: the sum of every token's ORTH hash, summed
in a Python loop over all tokens (a tenth of a training step once the encoder is fast). This
subclass computes the same number, exactly, from `Doc.to_array(ORTH)`. `trfs2arrays` pools each
doc's word pieces into token vectors for the whole batch in one gather (spacy-transformers' aligns
doc by doc); in prediction, a group of docs at a time, and a long doc a chunk of tokens at a time,
so that memory stays bounded (a 1M-character doc's word pieces are 0.9 GB).

Both follow spacy-transformers 1.4.0 (the pinned range is >=1.4.0,<1.5.0): `get_batch_id` is
`TransformerListener.get_batch_id`'s sum, and `trfs2arrays` is a batch-wise rewrite of
`spacy_transformers/layers/trfs2arrays.py` (its layer name, attributes, error message, and its
handling of empty docs and of docs without word pieces are copied from there). A rewrite, not a
wrapper, because upstream's layer loops over the docs, with device copies per doc. Keep them in
step with upstream when the pin moves: tests/test_listener.py compares both with upstream's.
"""

from typing import Callable, List, Tuple, cast

import numpy
from spacy.attrs import IS_SPACE, ORTH
from spacy.tokens import Doc
from spacy_transformers.data_classes import TransformerData
from spacy_transformers.layers import TransformerListener
from thinc.api import Model, to_numpy
from thinc.types import Floats2d, Ints1d, Ragged
from transformers.modeling_outputs import ModelOutput

LOW_BITS = numpy.uint64(0xFFFFFFFF)
SHIFT = numpy.uint64(32)


class FastTransformerListener(TransformerListener):
    """`spacy_transformers.layers.TransformerListener` with a vectorized `get_batch_id`."""

    @classmethod
    def get_batch_id(cls, inputs: List[Doc]) -> int:
        """sum(token.orth for doc in inputs for token in doc), as the base class computes it.

        ORTH hashes are 64-bit, so their sum overflows a uint64: the high and low 32-bit halves
        are summed separately (neither sum can overflow below 2**32 tokens) and joined as a
        Python int, which is exact.
        """
        if not inputs:
            return 0
        orths = numpy.concatenate([doc.to_array(ORTH) for doc in inputs]).astype(numpy.uint64)
        high = int((orths >> SHIFT).sum(dtype=numpy.uint64))
        low = int((orths & LOW_BITS).sum(dtype=numpy.uint64))
        return (high << 32) + low


def trfs2arrays(
    pooling: Model[Ragged, Floats2d], grad_factor: float
) -> Model[List[TransformerData], List[Floats2d]]:
    """spacy-transformers' `trfs2arrays`: each doc's word-piece vectors, pooled per token, with the
    same result and gradient, computed for the whole batch at once.

    The original aligns word pieces to tokens doc by doc (on a GPU: two host-to-device copies
    and a gather kernel per doc, forward and backward); here the batch's alignments are joined on
    the host, copied once, and applied in one gather (one scatter-add backward). Prediction, which
    needs no backward pass, does the same for groups of docs of at most `POOL_ROWS` word-piece
    rows, and pools a longer doc from its own rows, `POOL_TOKENS` tokens at a time, without a copy
    of all its word pieces (the same vectors, in bounded memory). The layer has the
    original's name, attributes and child, so pipelines trained with either load in both.
    """
    return Model(
        "trfs2arrays", _trfs2arrays_forward, layers=[pooling], attrs={"grad_factor": grad_factor}
    )


# Prediction pools a batch's docs in groups of at most this many word-piece rows (windows x padded
# length), and a longer doc from its own rows, this many tokens at a time: the word pieces copied at
# once stay a few MB, where a 1M-character doc has 600,000 rows (0.9 GB at width 384).
POOL_ROWS = 65536
POOL_TOKENS = 8192


def _trfs2arrays_forward(
    model: Model, trf_datas: List[TransformerData], is_train: bool
) -> Tuple[List[Floats2d], Callable]:
    for trf_data in trf_datas:
        if not isinstance(trf_data, TransformerData):
            raise ValueError(
                "Expected spacy_transformers.data_classes.TransformerData in trf_data, got: "
                f"{type(trf_data)}. Check that the pipeline has a transformer component with a "
                "spacy-transformers TransformerModel architecture."
            )
    # Docs the transformer saw (empty docs have no output, and get a (0, 0) array, as upstream).
    encoded = [
        i
        for i, trf_data in enumerate(trf_datas)
        if "last_hidden_state" in trf_data.model_output
        and trf_data.model_output["last_hidden_state"].size
    ]
    outputs: List[Floats2d] = [model.ops.alloc2f(0, 0) for _ in trf_datas]
    if not encoded:
        return outputs, lambda d_outputs: []
    if is_train:
        return outputs, _pool_batch(model, trf_datas, encoded, outputs, is_train)
    # Prediction, which keeps nothing for a backward pass: a group of docs at a time.
    shapes = [trf_datas[i].model_output["last_hidden_state"].shape for i in encoded]
    for group in _groups([int(numpy.prod(shape[:-1])) for shape in shapes]):
        _pool_batch(model, trf_datas, [encoded[j] for j in group], outputs, is_train)
    return outputs, _no_backprop


def _pool_batch(
    model: Model,
    trf_datas: List[TransformerData],
    encoded: List[int],
    outputs: List[Floats2d],
    is_train: bool,
) -> Callable[[List[Floats2d]], List[TransformerData]]:
    """Pool the word pieces of the docs `encoded` (positions in `trf_datas`) into `outputs`, in one
    gather from their joined rows; in prediction, a single doc's tokens are pooled from its own
    rows, `POOL_TOKENS` at a time. The backward pass."""
    pooling: Model[Ragged, Floats2d] = model.layers[0]
    ops = model.ops
    hidden = [trf_datas[i].model_output["last_hidden_state"] for i in encoded]
    sources = [ops.reshape2f(h, -1, trf_datas[i].width) for i, h in zip(encoded, hidden)]
    source_rows = numpy.cumsum([0] + [len(s) for s in sources])
    # Each doc's alignment indexes its own rows: shift it to the doc's rows in the joined batch.
    # A doc none of whose tokens has a word piece gets, as upstream, one zero row per token (the
    # row appended after the docs' rows; its gradient is dropped).
    zero_row = int(source_rows[-1])
    indices_: List[numpy.ndarray] = []
    lengths_: List[numpy.ndarray] = []
    for i, start in zip(encoded, source_rows):
        align = trf_datas[i].align
        lengths = to_numpy(align.lengths).astype("int32")
        if lengths.sum():
            indices_.append(to_numpy(align.dataXd).astype("int32") + start)
            lengths_.append(lengths)
        else:
            indices_.append(numpy.full(len(lengths), zero_row, dtype="int32"))
            lengths_.append(numpy.ones(len(lengths), dtype="int32"))
    n_tokens = numpy.cumsum([len(lengths) for lengths in lengths_])
    if not is_train and len(encoded) == 1 and zero_row not in indices_[0]:
        # One doc (a long one, or a group of its own): its own rows, a chunk of tokens at a time.
        outputs[encoded[0]] = _pool_chunks(pooling, sources[0], indices_[0], lengths_[0])
        return _no_backprop
    indices = ops.asarray1i(cast(Ints1d, numpy.concatenate(indices_)))
    X = ops.xp.concatenate(sources + [ops.alloc2f(1, sources[0].shape[1], dtype=sources[0].dtype)])
    pooled, backprop_pooling = pooling(
        Ragged(X[indices], ops.asarray1i(cast(Ints1d, numpy.concatenate(lengths_)))),
        is_train,
    )
    for i, Y in zip(encoded, ops.xp.split(pooled, n_tokens[:-1].tolist())):
        outputs[i] = Y

    def backprop(d_outputs: List[Floats2d]) -> List[TransformerData]:
        d_pooled = ops.xp.concatenate([d_outputs[i] for i in encoded])
        d_tokens = backprop_pooling(d_pooled).dataXd
        dX = ops.alloc2f(*X.shape, dtype=X.dtype)
        ops.scatter_add(dX, indices, d_tokens)
        dX *= model.attrs["grad_factor"]
        d_trf_datas = []
        for i, h, start, end in zip(encoded, hidden, source_rows[:-1], source_rows[1:]):
            d_trf_datas.append(
                TransformerData(
                    model_output=ModelOutput(last_hidden_state=dX[start:end].reshape(h.shape)),
                    wordpieces=trf_datas[i].wordpieces,
                    align=trf_datas[i].align,
                )
            )
        return d_trf_datas

    return backprop


def _groups(sizes: List[int]) -> List[List[int]]:
    """Positions of `sizes`, in consecutive groups that sum to at most `POOL_ROWS` (a larger one
    alone)."""
    groups: List[List[int]] = []
    total = 0
    for position, size in enumerate(sizes):
        if not groups or total + size > POOL_ROWS:
            groups.append([])
            total = 0
        groups[-1].append(position)
        total += size
    return groups


def _pool_chunks(
    pooling: Model[Ragged, Floats2d], X: Floats2d, indices: numpy.ndarray, lengths: numpy.ndarray
) -> Floats2d:
    """`pooling`'s output for `Ragged(X[indices], lengths)`, `POOL_TOKENS` tokens at a time, so
    that only one chunk's word pieces are copied at once. Each token is pooled alone, so the
    result is the one-call result."""
    ops = pooling.ops
    ends = numpy.cumsum(lengths)
    pooled = None
    for start in range(0, len(lengths), POOL_TOKENS):
        stop = min(start + POOL_TOKENS, len(lengths))
        pieces = indices[ends[start] - lengths[start] : ends[stop - 1]]
        chunk = pooling.predict(
            Ragged(
                X[ops.asarray1i(cast(Ints1d, pieces))],
                ops.asarray1i(cast(Ints1d, lengths[start:stop])),
            )
        )
        if stop == len(lengths) and start == 0:
            return chunk
        if pooled is None:
            pooled = ops.alloc2f(len(lengths), chunk.shape[1], dtype=chunk.dtype, zeros=False)
        pooled[start:stop] = chunk
    return cast(Floats2d, pooled)


def _no_backprop(d_outputs: List[Floats2d]) -> List[TransformerData]:
    raise ValueError("The listener's prediction pass (is_train=False) has no backward pass.")


def blank_tokens(doc: Doc) -> numpy.ndarray:
    """Tokens that are never (part of) an entity: whitespace, as in spaCy's own `ner`, and tokens
    the transformer saw no word piece of (control characters), whose only evidence would be the
    casing features."""
    blank = doc.to_array(IS_SPACE).astype(bool)
    trf_data = doc._.trf_data if doc.has_extension("trf_data") else None
    align = getattr(trf_data, "align", None)
    if align is not None and len(align.lengths) == len(doc):
        blank |= to_numpy(align.lengths) == 0
    return blank


def check_upstream(name: str, model: Model, docs: List[Doc]) -> None:
    """Raise if the model listens to a transformer whose output the docs lack: the listener would
    silently predict from zero vectors."""
    listeners = [node for node in model.walk() if node.name == "transformer-listener"]
    if not listeners or not Doc.has_extension("trf_data"):
        return
    if all(doc._.trf_data is not None for doc in docs if len(doc)):
        return
    upstream = getattr(listeners[0], "upstream_name", "*")
    raise ValueError(
        f"[bert_ner] '{name}' listens to a transformer component (upstream: {upstream!r}), but "
        "the docs have no transformer output (doc._.trf_data is None), so it would predict from "
        "zero vectors. Run the transformer before it: don't disable or exclude it (e.g. "
        f"`nlp.select_pipes(enable=['transformer', '{name}'])`). To use the component without a "
        "transformer component, give it its own copy of the transformer before sourcing it: "
        f'`trained_nlp.replace_listeners("transformer", "{name}", ["model.tok2vec"])`, then '
        f'`nlp.add_pipe("{name}", source=trained_nlp)` (in a config: '
        f'`replace_listeners = ["model.tok2vec"]` under [components.{name}]).'
    )
