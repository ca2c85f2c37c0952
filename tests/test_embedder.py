"""Where the model comes from, in order, and that it gives stable vectors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from subcog import embedder as embedding
from subcog.config import Settings
from subcog.embedder import Embedder, load_embedder, snapshot_dir
from subcog.errors import ModelUnavailable


def test_same_text_gives_the_same_unit_vector(embedder: Embedder) -> None:
    first, second = embedder.embed(["Caroline is a counselor.", "Caroline is a counselor."])
    assert first.shape == (384,)
    assert first.dtype == np.float32
    assert np.array_equal(first, second)
    assert np.array_equal(first, embedder.embed(["Caroline is a counselor."])[0])
    assert abs(float(np.linalg.norm(first)) - 1.0) < 1e-4


def test_paraphrases_are_closer_than_unrelated_text(embedder: Embedder) -> None:
    cat, kitten, stocks = embedder.embed(
        ["The cat sits on the mat", "A kitten is resting on a rug", "Stock markets fell sharply"]
    )
    assert float(cat @ kitten) > float(cat @ stocks) + 0.3


def test_subcog_model_path_comes_first(
    tmp_path: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = snapshot_dir(model_cache)
    assert snapshot is not None
    model_dir = tmp_path / "my-model"
    shutil.copytree(snapshot, model_dir)
    monkeypatch.setenv("SUBCOG_MODEL_PATH", str(model_dir))
    monkeypatch.setenv("SUBCOG_CACHE_DIR", str(tmp_path / "empty-cache"))
    loaded = load_embedder(Settings.from_env())
    assert loaded.source.kind == "path"
    assert loaded.source.location == model_dir
    assert not (tmp_path / "empty-cache").exists()


def test_a_model_path_without_model_files_is_explained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUBCOG_MODEL_PATH", str(tmp_path))
    with pytest.raises(ModelUnavailable, match=r"lacks model\.onnx, tokenizer\.json"):
        load_embedder(Settings.from_env())


def test_the_cached_model_loads_without_network(settings: Settings, model_cache: Path) -> None:
    loaded = load_embedder(settings)
    assert loaded.source.kind == "cache"
    assert loaded.source.location == snapshot_dir(model_cache)


def test_the_offline_bundle_is_verified_and_assembled_into_an_empty_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "fresh-cache"
    monkeypatch.setenv("SUBCOG_CACHE_DIR", str(cache))
    loaded = load_embedder(Settings.from_env())
    assert loaded.source.kind == "bundle"
    snapshot = snapshot_dir(cache)
    assert snapshot is not None
    assert sorted(p.name for p in snapshot.iterdir()) == [
        "model.onnx",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert json.loads((snapshot / "tokenizer_config.json").read_text())["model_max_length"] == 256
    # The next start finds it in the cache and copies nothing.
    assert load_embedder(Settings.from_env()).source.kind == "cache"


def test_a_bundle_file_with_the_wrong_checksum_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = embedding.BundleFile(
        embedding.BUNDLE_FILES["model.onnx"].distribution,
        embedding.BUNDLE_FILES["model.onnx"].path,
        "0" * 64,
    )
    monkeypatch.setitem(embedding.BUNDLE_FILES, "model.onnx", wrong)
    cache = tmp_path / "fresh-cache"
    with pytest.raises(ModelUnavailable, match="sha256"):
        embedding.assemble_bundle(cache)
    assert snapshot_dir(cache) is None


def test_with_no_model_anywhere_the_error_lists_every_way_to_provide_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUBCOG_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(embedding, "bundle_files", lambda: None)
    with pytest.raises(ModelUnavailable) as raised:
        load_embedder(Settings.from_env())
    message = str(raised.value)
    for way in ("SUBCOG_MODEL_PATH", "subcog doctor", "subcog[offline]", "huggingface.co"):
        assert way in message


def test_long_text_is_truncated_to_256_word_pieces(embedder: Embedder) -> None:
    base = "word " * 300
    # Past 256 word pieces the text no longer changes the vector.
    a, b = embedder.embed([base + "apples", base + "rockets"])
    assert np.allclose(a, b)
