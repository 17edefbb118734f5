"""A corpus as a user's annotation tool exports it: a converted DocBin written back as doccano JSONL
(`{"text": ..., "label": [[start, end, label], ...]}`, one record per Doc), to train from JSONL:

    python -m spacy_bert_ner convert ../shared/data/conll2003/dev.txt work/dev.spacy --n-sents 1
    python jsonl_corpus.py work/dev.spacy work/dev.jsonl
"""

import json
import sys
from pathlib import Path

import spacy
from spacy.tokens import DocBin


def main(docbin: str, output: str) -> None:
    docs = DocBin().from_disk(docbin).get_docs(spacy.blank("en").vocab)
    records = [
        {"text": doc.text, "label": [[e.start_char, e.end_char, e.label_] for e in doc.ents]}
        for doc in docs
    ]
    Path(output).write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf8")
    print(f"{len(records)} records -> {output}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
