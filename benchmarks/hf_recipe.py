"""The Hugging Face token-classification recipe, the peer in benchmarks/accuracy.py.

As transformers' examples/pytorch/token-classification/run_ner.py trains by default: one sentence
per example, the label on each word's first word piece (other pieces -100, ignored by the loss),
`AutoModelForTokenClassification` (a linear layer over the encoder), AdamW, linear warmup then
linear decay to 0, gradient clipping at 1.0, the last model evaluated. Written as a plain loop so
that it needs nothing beyond transformers and torch (the Trainer would also need accelerate).
"""

import math
from typing import Any, Dict, List, Sequence, Tuple

import torch
from tqdm import tqdm
from transformers import (
    AutoModelForTokenClassification,
    AutoTokenizer,
    DataCollatorForTokenClassification,
    get_linear_schedule_with_warmup,
    set_seed,
)

Sentence = Tuple[List[str], List[str]]  # words, BIO tags
IGNORE = -100


def encode(
    tokenizer: Any, sentences: Sequence[Sentence], label2id: Dict[str, int], max_length: int
):
    """Word pieces with [CLS]/[SEP], and the label ids on each word's first piece."""
    features = []
    for words, tags in sentences:
        encoding = tokenizer(
            words, is_split_into_words=True, truncation=True, max_length=max_length
        )
        labels, previous = [], None
        for word_id in encoding.word_ids():
            first_piece = word_id is not None and word_id != previous
            labels.append(label2id[tags[word_id]] if first_piece else IGNORE)
            previous = word_id
        features.append({**encoding, "labels": labels})
    return features


def train(
    encoder: str,
    train_sentences: Sequence[Sentence],
    epochs: int = 3,
    batch_size: int = 32,
    learning_rate: float = 1e-4,
    warmup_ratio: float = 0.1,
    weight_decay: float = 0.0,
    max_length: int = 256,
    seed: int = 0,
    device: str = "cpu",
) -> Tuple[Any, Any, Dict[str, Any]]:
    """Fine-tune the encoder with a token-classification head: (model, tokenizer, settings)."""
    set_seed(seed)
    labels = sorted({tag for _, tags in train_sentences for tag in tags} | {"O"})
    label2id = {label: i for i, label in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(encoder, use_fast=True)
    model = AutoModelForTokenClassification.from_pretrained(
        encoder, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id
    ).to(device)
    features = encode(tokenizer, train_sentences, label2id, max_length)
    loader = torch.utils.data.DataLoader(
        features,
        batch_size=batch_size,
        shuffle=True,
        collate_fn=DataCollatorForTokenClassification(tokenizer),
        generator=torch.Generator().manual_seed(seed),
    )
    total_steps = epochs * len(loader)
    warmup_steps = math.ceil(warmup_ratio * total_steps)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=learning_rate, weight_decay=weight_decay, eps=1e-8
    )
    schedule = get_linear_schedule_with_warmup(optimizer, warmup_steps, total_steps)
    model.train()
    with tqdm(total=total_steps, desc="hf train", unit="step") as progress:
        for _ in range(epochs):
            for batch in loader:
                loss = model(**batch.to(device)).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad()
                progress.update(1)
                progress.set_postfix(loss=f"{loss.item():.4f}")
    settings = {
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "warmup_steps": warmup_steps,
        "total_steps": total_steps,
        "weight_decay": weight_decay,
        "max_length": max_length,
        "labels": "first word piece",
    }
    return model, tokenizer, settings


@torch.inference_mode()
def predict(
    model: Any,
    tokenizer: Any,
    sentences: Sequence[List[str]],
    batch_size: int = 64,
    max_length: int = 256,
) -> List[List[str]]:
    """The tag of each word: the argmax at its first piece ("O" for words cut off at max_length)."""
    model.eval()
    id2label = model.config.id2label
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    tags: List[List[str]] = [[] for _ in sentences]
    for start in range(0, len(order), batch_size):
        batch = [sentences[i] for i in order[start : start + batch_size]]
        encoding = tokenizer(
            batch,
            is_split_into_words=True,
            truncation=True,
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        )
        predicted = model(**encoding.to(model.device)).logits.argmax(-1).tolist()
        for row, i in enumerate(order[start : start + batch_size]):
            word_tags = ["O"] * len(sentences[i])
            previous = None
            for position, word_id in enumerate(encoding.word_ids(row)):
                if word_id is not None and word_id != previous:
                    word_tags[word_id] = id2label[predicted[row][position]]
                previous = word_id
            tags[i] = word_tags
    return tags
