from pathlib import Path

import spacy
import torch
from synthetic import make_sentences

from spacy_bert_ner import load, quantize


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
