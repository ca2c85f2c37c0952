"""all-MiniLM-L6-v2 (and its int8 copy) run by ONNX Runtime directly, without fastembed.

fastembed finds, downloads and runs models; for the default model, whose files subcog has on
disk, running it is a tokenizer, one ONNX Runtime session and a mean: what fastembed 0.9.1
does for it (`PooledNormalizedEmbedding`: mean of the token vectors under the attention mask,
summed in float64, then unit length), here without importing fastembed and what it imports
(huggingface_hub, requests, PIL, loguru: memory every server would pay, benchmarks/README.md,
"One Lance"). The vectors are the same to the bit (tests/test_embedder.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt


class MiniLM:
    """The model in `directory` (model.onnx, tokenizer.json, tokenizer_config.json), with the
    interface of fastembed's TextEmbedding that the Embedder uses: embed(texts)."""

    def __init__(self, directory: Path, threads: int | None = None) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        config = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
        self._tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_length=_max_length(config, directory))
        self._tokenizer.no_padding()  # one text at a time: nothing to pad
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = threads
        # ONNX Runtime's worker threads keep spinning after each run by default, holding a
        # core that LanceDB needs between two embeddings (see embedder._fastembed).
        options.add_session_config_entry("session.force_spinning_stop", "1")
        self._session = ort.InferenceSession(
            str(directory / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self._inputs = {node.name for node in self._session.get_inputs()}

    def embed(self, texts: Iterable[str], batch_size: int = 1) -> Iterator[npt.NDArray[Any]]:
        """Each text's unit-length vector, one text at a time (batch_size is always 1)."""
        for text in texts:
            encoded = self._tokenizer.encode(text)
            ids = np.array([encoded.ids], dtype=np.int64)
            mask = np.array([encoded.attention_mask], dtype=np.int64)
            feed = {"input_ids": ids}
            if "attention_mask" in self._inputs:
                feed["attention_mask"] = mask
            if "token_type_ids" in self._inputs:
                feed["token_type_ids"] = np.zeros_like(ids)
            tokens: npt.NDArray[Any] = self._session.run(None, feed)[0]
            summed = np.sum(tokens, axis=1, where=mask[:, :, np.newaxis] > 0, dtype=np.float64)
            mean = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
            unit = mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
            yield unit.astype(tokens.dtype)[0]


def _max_length(config: dict[str, Any], directory: Path) -> int:
    """Where texts are cut, in word pieces: the stricter of tokenizer_config.json's two keys,
    as fastembed 0.9.1 reads them (a huge placeholder value does not count)."""
    found = [
        value
        for value in (config.get("model_max_length"), config.get("max_length"))
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 1_000_000
    ]
    if not found:
        raise ValueError(f"{directory}/tokenizer_config.json sets no model_max_length")
    return min(found)
