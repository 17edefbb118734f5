"""The first N sentences of a CoNLL file (its -DOCSTART- lines kept), e.g. a small corpus:

python benchmarks/first_sentences.py ../shared/data/conll2003/train.txt 1000 OUT.txt
"""

import sys
from pathlib import Path


def main(path: str, n: int, output: str) -> None:
    kept, sentences, in_sentence = [], 0, False
    for line in Path(path).read_text(encoding="utf8").splitlines():
        is_token = bool(line.strip()) and not line.startswith("-DOCSTART-")
        if in_sentence and not is_token:
            sentences += 1
            if sentences == n:
                break
        in_sentence = is_token
        kept.append(line)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(output).write_text("\n".join(kept) + "\n", encoding="utf8")
    print(f"{sentences} sentences -> {output}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
