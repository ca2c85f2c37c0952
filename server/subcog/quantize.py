"""An int8 copy of the embedding model, made once in the cache: faster, and far smaller.

The models subcog finds multiply in float32: fastembed's download is a float model, and the
offline bundle's int8 weights are cast back to float when ONNX Runtime loads it, several times
the file's size in RSS. ONNX Runtime's dynamic quantisation keeps each MatMul's weights as int8,
per output channel, and quantises the activations on every run, so the products run in int8.

Against the bundle as it loads, the copy embeds faster, alone and in batches, takes a fraction
of the memory, keeps LoCoMo's recall and MRR within the noise, and gives vectors close to the
float model's (benchmarks/README.md, "Where the time went", the int8 row, and "Design figures
behind the code").

The activations are quantised over the whole input of a run, so a text's vector would depend
on the texts batched with it. Embedder runs one text at a time, which keeps every text's
vector the same wherever it is embedded.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

# Bump when the recipe changes: copies made by an older recipe are then made again.
RECIPE = "dynamic-int8-per-channel-1"
CACHE_SUBDIR = "subcog-int8"
# A model with any of these is quantised already, and used as it is.
QUANTIZED_OPS = {
    "MatMulInteger",
    "DynamicQuantizeLinear",
    "QLinearMatMul",
    "MatMulIntegerToFloat",
    "DynamicQuantizeMatMul",
    "MatMulNBits",
}


def quantized_copy(source: Path, cache_dir: Path) -> Path | None:
    """The int8 copy of the model in the directory `source`, made under `cache_dir` the first
    time; None if that model is quantised already. Raises whatever the conversion raises."""
    model = source / "model.onnx"
    stat = model.stat()
    identity = f"{RECIPE}:{model.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    target = cache_dir / CACHE_SUBDIR / hashlib.sha256(identity.encode()).hexdigest()[:16]
    if target.is_dir():
        return _made(target)
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(target.parent / f"{target.name}.lock"):
        if target.is_dir():  # another process made it meanwhile
            return _made(target)
        staging = Path(tempfile.mkdtemp(prefix=".quantize-", dir=target.parent))
        try:
            if _quantize(model, staging):
                _copy_tokenizer(source, staging)
                log.info("made an int8 copy of %s in %s", model, target)
            else:
                (staging / "as-provided").write_text(identity)
                log.info("%s is quantised already: used as it is", model)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return _made(target)


def _made(target: Path) -> Path | None:
    """A finished copy: the int8 model, or None for a model marked as quantised already."""
    return None if (target / "as-provided").is_file() else target


def _copy_tokenizer(source: Path, target: Path) -> None:
    """The tokenizer and config files beside the model, as they are."""
    for item in source.iterdir():
        if item.is_file() and not item.name.endswith((".onnx", ".onnx_data", ".lock")):
            shutil.copyfile(item, target / item.name)


def _quantize(model: Path, staging: Path) -> bool:
    """Write staging/model.onnx, the int8 model; False (and nothing written) if `model` is
    quantised already."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if any(node.op_type in QUANTIZED_OPS for node in onnx.load(str(model)).graph.node):
        return False
    # Constant folding first: turns the bundle's cast-and-scale weights into float weights,
    # which quantize_dynamic then stores as int8 (fp32 models pass through unchanged).
    folded = staging / "folded.onnx"
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(folded)
    ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    # The quantiser prints a warning or two, and stdout belongs to the protocol.
    with contextlib.redirect_stdout(sys.stderr), _quiet_quantizer():
        quantize_dynamic(
            folded, staging / "model.onnx", per_channel=True, weight_type=QuantType.QInt8
        )
    folded.unlink()
    return True


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """Drop the root-logger advice the quantiser gives on every call (pre-processing)."""

    def advice(record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(advice)
    try:
        yield
    finally:
        root.removeFilter(advice)
