"""The casing features, computed for the whole batch at once.

The default encoder is uncased, so the classifier gets capitalisation back from spaCy's own tok2vec
layers: hash embeddings of each token's SHAPE, PREFIX and SUFFIX (`spacy.MultiHashEmbed.v2`), then
maxout layers over a window of neighbours (`spacy.MaxoutWindowEncoder.v2`), chained as
`spacy.Tok2Vec.v2` does. Built that way, the layers handle the batch doc by doc in three places:
the features are read and copied to the device one doc at a time, and the window encoder pads each
doc with arrays of zeros of its own before joining them, forward and backward (on a GPU: a
host-to-device copy and several small allocations per doc; profiling inference on an H100 over
5,000 sentences put the allocations alone at a fifth of the time, BENCHMARKS.md).

`casing_features` runs the same layers (built in the same order by `CasingFeatures.v1`, so the
same seed gives the same weights) on the batch: the features of all docs are read into one array
and copied once, and the window encoder's padded input is made with one scatter into a zeroed
array (one gather back). Its outputs and gradients are those of `spacy.Tok2Vec.v2` with the same
layers (tests/test_casing.py checks both).
"""

from typing import Callable, List, Optional, Sequence, Tuple, Union, cast

import numpy
from spacy.tokens import Doc
from thinc.api import Model
from thinc.types import Floats2d, Ints1d, Ints2d

# Rows the window encoder runs at once in prediction (a long doc's tokens go in chunks).
PREDICT_ROWS = 8192


def casing_features(embed: Model, encode: Model) -> Model[List[Doc], List[Floats2d]]:
    """`chain(embed, encode)`, run batch-wise: `embed` as `spacy.MultiHashEmbed.v2` builds it
    (without static vectors), `encode` as `spacy.MaxoutWindowEncoder.v2` does."""
    model: Model[List[Doc], List[Floats2d]] = Model(
        "casing_features",
        _forward,
        init=_init,
        layers=[embed, encode],
        dims={"nO": encode.get_dim("nO")},
    )
    model.set_ref("embed", embed)
    model.set_ref("encode", encode)
    # The parts of spaCy's layers run here (spaCy sets no refs on them), found by their names.
    # MultiHashEmbed.v2 is extract_features >> list2ragged >> with_array(hash embeddings) >>
    # with_array(maxout) >> ragged2list; MaxoutWindowEncoder.v2 is with_array(window layers, pad=).
    arrays = [layer.layers[0] for layer in embed.layers if layer.name.startswith("with_array(")]
    model.set_ref("extract", _one(embed.layers, "extract_features", "MultiHashEmbed.v2"))
    model.set_ref("embeddings", _one(arrays, "hashembed", "MultiHashEmbed.v2"))
    model.set_ref("mix", _one(arrays, "maxout", "MultiHashEmbed.v2"))
    if not encode.name.startswith("with_array(") or "pad" not in encode.attrs:
        raise ValueError(_unexpected_layers("MaxoutWindowEncoder.v2", "with_array"))
    model.set_ref("window", encode.layers[0])
    return model


def _one(layers: List[Model], name: str, spacy_layer: str) -> Model:
    """The one layer among `layers` whose name starts with (or, for "hashembed", contains)
    `name`."""
    found = [
        layer
        for layer in layers
        if (name in layer.name if name == "hashembed" else layer.name.startswith(name))
    ]
    if len(found) != 1:
        raise ValueError(_unexpected_layers(spacy_layer, name))
    return found[0]


def _unexpected_layers(spacy_layer: str, expected: str) -> str:
    return (
        f"[bert_ner] CasingFeatures.v1 runs the layers of spaCy's {spacy_layer} batch-wise, but "
        f"the {spacy_layer} of this spaCy version has no single {expected!r} layer. Use the "
        "spaCy version in the package's requirements, or set the casing features to spaCy's own "
        "layers (spacy.Tok2Vec.v2 over spacy.MultiHashEmbed.v2 and spacy.MaxoutWindowEncoder.v2)."
    )


def _init(
    model: Model[List[Doc], List[Floats2d]], X: Optional[Sequence[Doc]] = None, Y: None = None
) -> None:
    # As `chain(embed, encode)` initializes: each layer on the previous one's output.
    embed, encode = model.layers
    embed.initialize(X=X)
    encode.initialize(X=embed.predict(X) if X is not None else None)


def _forward(
    model: Model[List[Doc], List[Floats2d]], docs: List[Doc], is_train: bool
) -> Tuple[List[Floats2d], Callable]:
    # The features are read here with extract_features' columns; on one array, only the hash
    # embeddings and the maxout layer of MultiHashEmbed do anything.
    extract, embeddings, mix = (model.get_ref(name) for name in ("extract", "embeddings", "mix"))
    window, pad = model.get_ref("window"), model.get_ref("encode").attrs["pad"]
    width = model.get_dim("nO")
    lengths = numpy.asarray([len(doc) for doc in docs], dtype="int32")
    n_tokens = int(lengths.sum())
    if not n_tokens:
        return [model.ops.alloc2f(0, width) for _ in docs], lambda dYs: []

    ids = model.ops.asarray2i(_read_features(docs, extract.attrs["columns"]), dtype="uint64")
    # Each non-empty doc is preceded by `pad` rows of zeros, and the last one followed by them:
    # the array thinc's `ops.flatten(docs, pad=pad)` builds, made in one scatter.
    filled = lengths[lengths > 0]
    rows = model.ops.asarray1i(
        numpy.arange(n_tokens) + pad * numpy.repeat(numpy.arange(1, len(filled) + 1), filled)
    )
    padded_shape = (n_tokens + pad * (len(filled) + 1), width)
    if not is_train:
        encoded = _predict_in_chunks(model, ids, rows, padded_shape)
        return model.ops.unflatten(encoded, cast(Ints1d, lengths)), _no_backprop
    embedded, backprop_embeddings = embeddings(ids, is_train)
    mixed, backprop_mix = mix(embedded, is_train)
    padded = model.ops.alloc2f(*padded_shape)
    padded[rows] = mixed
    encoded, backprop_window = window(padded, is_train)
    outputs = model.ops.unflatten(encoded[rows], cast(Ints1d, lengths))

    def backprop(d_outputs: List[Floats2d]) -> List[Ints2d]:
        d_padded = model.ops.alloc2f(*padded_shape)
        d_padded[rows] = model.ops.flatten(d_outputs)
        d_mixed = backprop_window(d_padded)[rows]
        backprop_embeddings(backprop_mix(d_mixed))
        return []

    return outputs, backprop


def _predict_in_chunks(
    model: Model, ids: Ints2d, rows: Ints1d, padded_shape: Tuple[int, int]
) -> Floats2d:
    """The window encoder's output for each token (its row of the padded array that `_forward`
    builds), computed `PREDICT_ROWS` tokens at a time, so that only a chunk's activations are held
    (a 1M-character doc's are a GB), and only the tokens' rows are kept. A row's output depends on
    the `pad` rows on either side of it (the encoder's receptive field), so a chunk encoded with
    those rows around it gives the one-pass output."""
    embeddings, mix, window = (model.get_ref(name) for name in ("embeddings", "mix", "window"))
    pad = model.get_ref("encode").attrs["pad"]
    padded = model.ops.alloc2f(*padded_shape)
    for start in range(0, len(ids), PREDICT_ROWS):
        chunk = slice(start, start + PREDICT_ROWS)
        padded[rows[chunk]] = mix.predict(embeddings.predict(ids[chunk]))
    encoded = model.ops.alloc2f(len(ids), padded_shape[1], zeros=False)
    for start in range(0, len(ids), PREDICT_ROWS):
        chunk_rows = rows[start : start + PREDICT_ROWS]
        first = max(int(chunk_rows[0]) - pad, 0)
        window_out = window.predict(padded[first : int(chunk_rows[-1]) + pad + 1])
        encoded[start : start + len(chunk_rows)] = window_out[chunk_rows - first]
    return encoded


def _no_backprop(d_outputs: List[Floats2d]) -> List[Ints2d]:
    raise ValueError("The casing features' prediction pass (is_train=False) has no backward pass.")


def _read_features(docs: List[Doc], columns: List[Union[str, int]]) -> Ints2d:
    """Every token's feature hashes, one row per token of the batch, as spaCy's FeatureExtractor
    reads them doc by doc."""
    arrays = [doc.to_array(columns).reshape((len(doc), len(columns))) for doc in docs]
    return cast(Ints2d, numpy.concatenate(arrays).astype("uint64", copy=False))
