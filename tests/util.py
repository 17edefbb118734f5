"""Helpers the tests share: the project config, a pipeline built from it, a short training loop,
the processes descended from one (read from /proc, Linux), and the peak allocation of a call.

(Fixtures and pytest hooks stay in conftest.py; pytest discourages importing conftest.)
"""

import random
import re
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from spacy.language import Language
from spacy.training import Example
from spacy.util import load_config, load_model_from_config
from synthetic import make_examples
from thinc.api import Adam, fix_random_seed

CONFIG_PATH = Path(__file__).parent.parent / "configs" / "bert_ner.cfg"


def build_nlp(
    tiny_bert: str,
    overrides: Optional[Dict[str, Any]] = None,
    init_labels: Optional[List[str]] = None,
) -> Language:
    """The project's pipeline (configs/bert_ner.cfg, filled as `spacy train` fills it) over the
    encoder at `tiny_bert`, not yet initialized."""
    config = load_config(
        CONFIG_PATH,
        overrides={"components.transformer.model.name": tiny_bert, **(overrides or {})},
    )
    if init_labels is not None:
        config["initialize"]["components"]["bert_ner"] = {"labels": init_labels}
    return load_model_from_config(config, auto_fill=True)


def train(
    nlp: Language, epochs: int, seed: int = 0, examples: Optional[List[Example]] = None
) -> List[float]:
    """Adam(1e-3), batches of 8 over `examples` (by default 60 synthetic ones); returns the loss
    of each epoch."""
    fix_random_seed(seed)
    examples = make_examples(nlp, 60, 0) if examples is None else list(examples)
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


def fresh_environment(base: Path) -> Path:
    """A new virtual environment at `base/fresh` without this repository: its dependencies are
    this environment's installed packages (spacy-bert-ner and pipelines excluded), linked into a
    folder on its path, standing in for the package index, so that `pip --python` resolves
    requirements against them with no index. Returns its Python."""
    fresh = base / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], check=True)
    (site_packages,) = fresh.glob("lib/python*/site-packages")
    dependencies = base / "dependencies"
    dependencies.mkdir()
    own = re.compile(r"(spacy_bert_ner|__editable__|en_bert_ner|.*\.pth$)")
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not own.match(entry.name):
            (dependencies / entry.name).symlink_to(entry)
    (site_packages / "dependencies.pth").write_text(f"{dependencies}\n")
    return fresh / "bin" / "python"


def descendants(pid: int) -> Dict[int, str]:
    """The living descendants of `pid` (from /proc), with their command lines."""
    parents: Dict[int, List[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and alive(int(entry.name)):
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            parents.setdefault(parent, []).append(int(entry.name))
    found, todo = {}, [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            try:
                found[child] = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            todo.append(child)
    return {child: command.decode(errors="replace")[:100] for child, command in found.items()}


def alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def survivors(processes: Dict[int, str], seconds: float) -> Dict[int, str]:
    """Those of `processes` still alive `seconds` from now (or as soon as none is)."""
    deadline = time.monotonic() + seconds
    while any(alive(pid) for pid in processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    return {pid: command for pid, command in processes.items() if alive(pid)}


def small_tok2vec(width: int) -> dict:
    """A small spaCy tok2vec (spacy.HashEmbedCNN.v2) config, for a model without a transformer."""
    return {
        "@architectures": "spacy.HashEmbedCNN.v2",
        "width": width,
        "depth": 1,
        "embed_size": 100,
        "window_size": 1,
        "maxout_pieces": 2,
        "subword_features": False,
        "pretrained_vectors": None,
    }


def traced_peak(function: Callable[[], Any]) -> Tuple[Any, int]:
    """`function()`'s result and the most memory it allocated at once, in bytes, above what was
    allocated before it (tracemalloc: Python objects and numpy arrays, not torch tensors)."""
    import tracemalloc

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = function()
        return result, tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
