"""benchmarks/soup.py: the weights of several pipelines averaged into one."""

import importlib.util
from pathlib import Path

import numpy
import spacy
import torch

ROOT = Path(__file__).parent.parent


def load_soup():
    spec = importlib.util.spec_from_file_location("soup", ROOT / "benchmarks" / "soup.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def encoder_state(nlp):
    shim = next(s for node in nlp.get_pipe("transformer").model.walk() for s in node.shims)
    return shim._model.state_dict()


def test_soup_is_the_mean_of_the_weights(pipeline_path: Path, tmp_path: Path) -> None:
    other = spacy.load(pipeline_path)
    output_layer = other.get_pipe("bert_ner").model.get_ref("output_layer")
    output_layer.set_param("W", output_layer.get_param("W") * 3)
    for tensor in encoder_state(other).values():
        if tensor.is_floating_point():
            tensor.add_(1.0)
    other.to_disk(tmp_path / "other")
    load_soup().main(tmp_path / "soup", [pipeline_path, tmp_path / "other"])
    first, soup = spacy.load(pipeline_path), spacy.load(tmp_path / "soup")
    W = first.get_pipe("bert_ner").model.get_ref("output_layer").get_param("W")
    soup_W = soup.get_pipe("bert_ner").model.get_ref("output_layer").get_param("W")
    numpy.testing.assert_allclose(soup_W, 2 * W, rtol=1e-6)
    for key, tensor in encoder_state(first).items():
        if tensor.is_floating_point():
            torch.testing.assert_close(encoder_state(soup)[key], tensor + 0.5)
