"""Fixtures (a tiny local BERT, a pipeline trained on it) and the --run-slow option. Shared helpers
that are not fixtures live in util.py."""

from pathlib import Path
from typing import List

import pytest
from synthetic import vocabulary
from util import build_nlp, train


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: pass --run-slow to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A randomly initialised 2-layer BERT with a small uncased vocabulary, saved locally."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = tmp_path_factory.mktemp("tiny-bert")
    vocab_file = path / "vocab.txt"
    vocab_file.write_text("\n".join(vocabulary()) + "\n", encoding="utf8")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocabulary()),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(path)
    BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def pipeline_path(tiny_bert: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A transformer + bert_ner pipeline trained on the synthetic data, saved to disk."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    nlp = build_nlp(tiny_bert)
    train(nlp, 15)
    torch.set_num_threads(threads)
    path = tmp_path_factory.mktemp("trained-pipeline")
    nlp.to_disk(path)
    return path
