import random
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from spacy.language import Language
from spacy.util import load_config, load_model_from_config
from synthetic import make_examples, vocabulary
from thinc.api import Adam, fix_random_seed

CONFIG_PATH = Path(__file__).parent.parent / "configs" / "bert_ner.cfg"


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


def build_nlp(
    tiny_bert: str,
    overrides: Optional[Dict[str, Any]] = None,
    init_labels: Optional[List[str]] = None,
) -> Language:
    config = load_config(
        CONFIG_PATH,
        overrides={"components.transformer.model.name": tiny_bert, **(overrides or {})},
    )
    if init_labels is not None:
        config["initialize"]["components"]["bert_ner"] = {"labels": init_labels}
    return load_model_from_config(config, auto_fill=True)


def train(nlp: Language, epochs: int, seed: int = 0) -> List[float]:
    """Adam(1e-3), batches of 8 over 60 synthetic examples; returns the loss of each epoch."""
    fix_random_seed(seed)
    examples = make_examples(nlp, 60, 0)
    nlp.initialize(lambda: examples)
    optimizer = Adam(1e-3)
    rng = random.Random(seed)
    epoch_losses = []
    for _ in range(epochs):
        rng.shuffle(examples)
        losses: Dict[str, float] = {}
        for i in range(0, len(examples), 8):
            nlp.update(examples[i : i + 8], sgd=optimizer, losses=losses, drop=0.1)
        epoch_losses.append(losses["bert_ner"])
    return epoch_losses


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
