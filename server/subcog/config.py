"""Settings: every SUBCOG_* environment variable is read here, once, next to its default."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from subcog.errors import InvalidSetting
from subcog.storage.limits import Limits
from subcog.storage.location import Location, location_of

APP_NAME = "subcog"
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def _default_data_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir(APP_NAME, appauthor=False))


def _default_cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir(APP_NAME, appauthor=False)) / "models"


@dataclass(frozen=True)
class Setting:
    """One environment variable: its name, its default as the README shows it, and its meaning."""

    env: str
    default: str
    help: str


# The README's table of environment variables is checked against this list by a test.
SETTINGS: tuple[Setting, ...] = (
    Setting(
        "SUBCOG_DATA_DIR",
        "platformdirs user data dir",
        "This machine's files: the local store (unless SUBCOG_STORE), locks, tokens.",
    ),
    Setting(
        "SUBCOG_STORE",
        "DATA_DIR/lancedb",
        "Where the memories live: a path, or s3://bucket/prefix, gs://bucket/prefix, "
        "az://container/prefix (shared by many servers; README, Team and multi-machine). "
        "Credentials and endpoint from AWS_*, GOOGLE_*, AZURE_*.",
    ),
    Setting(
        "SUBCOG_REFRESH_S",
        "0 locally, 1 on object storage",
        "Seconds a server may answer from the version it last read before asking for a "
        "newer one: what another server wrote may be that late.",
    ),
    Setting(
        "SUBCOG_CACHE_DIR",
        "platformdirs user cache dir + /models",
        "Where the embedding model is cached (Hugging Face cache layout).",
    ),
    Setting(
        "SUBCOG_MODEL",
        "sentence-transformers/all-MiniLM-L6-v2",
        "The fastembed text embedding model. Changing it needs `subcog reindex`.",
    ),
    Setting(
        "SUBCOG_MODEL_PATH",
        "unset",
        "A directory with model.onnx and tokenizer files to use instead of the cache.",
    ),
    Setting(
        "SUBCOG_INT8",
        "1",
        "1 runs an int8 copy of the default model, made once in the cache (about twice as "
        "fast); 0 runs the model as provided.",
    ),
    Setting("SUBCOG_SCOPE", "default", "The scope used when a call names none."),
    Setting(
        "SUBCOG_LOAD_TIMEOUT",
        "20",
        "Seconds a tool call waits for the model and store to finish loading.",
    ),
    Setting(
        "SUBCOG_NEAR_DUPLICATE",
        "0.9",
        "Cosine similarity from which remember names an existing memory as very similar.",
    ),
    Setting("SUBCOG_MAX_CONTENT_CHARS", "8000", "Largest memory, in characters."),
    Setting("SUBCOG_MAX_TAGS", "20", "Most tags on one memory or in one filter."),
    Setting("SUBCOG_MAX_METADATA_BYTES", "4096", "Largest metadata object, as JSON bytes."),
    Setting("SUBCOG_LOG_LEVEL", "INFO", "Log level for stderr."),
    Setting(
        "SUBCOG_TOKEN",
        "generated, in DATA_DIR/http-token",
        "Bearer token for the HTTP transport; required to bind a non-loopback address.",
    ),
    Setting(
        "SUBCOG_ALLOWED_HOSTS",
        "unset",
        "Extra Host names the HTTP transport accepts, comma-separated (loopback always).",
    ),
    Setting(
        "SUBCOG_ALLOWED_ORIGINS",
        "unset",
        "Extra browser Origins the HTTP transport accepts, comma-separated.",
    ),
)


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidSetting(f"{name} must be a whole number, not {raw!r}.") from None
    if not low <= value <= high:
        raise InvalidSetting(f"{name} must be between {low} and {high}, not {value}.")
    return value


def _float(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidSetting(f"{name} must be a number, not {raw!r}.") from None
    if not low <= value <= high:
        raise InvalidSetting(f"{name} must be between {low} and {high}, not {value}.")
    return value


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in {"0", "1", "true", "false"}:
        raise InvalidSetting(f"{name} must be 1 or 0, not {raw!r}.")
    return raw in {"1", "true"}


def _path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name, "").strip()
    return Path(raw).expanduser() if raw else None


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in env.get(name, "").split(",") if item.strip())


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    store: Location
    refresh_s: float
    cache_dir: Path
    model: str
    model_path: Path | None
    int8: bool
    default_scope: str
    load_timeout: float
    near_duplicate: float
    max_content_chars: int
    max_tags: int
    max_metadata_bytes: int
    log_level: str
    token: str | None
    allowed_hosts: tuple[str, ...]
    allowed_origins: tuple[str, ...]
    # The storage layer's tuning values: not read from the environment; tests pass their own.
    limits: Limits = field(default_factory=Limits)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        from subcog.validation import check_scope  # validation needs no settings of its own

        scope = env.get("SUBCOG_SCOPE", "").strip() or "default"
        try:
            check_scope(scope)
        except ValueError as exc:
            raise InvalidSetting(f"SUBCOG_SCOPE: {exc}") from None
        level = env.get("SUBCOG_LOG_LEVEL", "").strip().upper() or "INFO"
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise InvalidSetting(
                f"SUBCOG_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not {level!r}."
            )
        data_dir = _path(env, "SUBCOG_DATA_DIR") or _default_data_dir()
        try:
            store = location_of(env.get("SUBCOG_STORE", "").strip() or None, data_dir, env)
        except ValueError as exc:
            raise InvalidSetting(str(exc)) from None
        return cls(
            data_dir=data_dir,
            store=store,
            refresh_s=_float(env, "SUBCOG_REFRESH_S", 1.0 if store.remote else 0.0, 0.0, 3600.0),
            cache_dir=_path(env, "SUBCOG_CACHE_DIR") or _default_cache_dir(),
            model=env.get("SUBCOG_MODEL", "").strip() or DEFAULT_MODEL,
            model_path=_path(env, "SUBCOG_MODEL_PATH"),
            int8=_flag(env, "SUBCOG_INT8", True),
            default_scope=scope,
            load_timeout=_float(env, "SUBCOG_LOAD_TIMEOUT", 20.0, 0.0, 3600.0),
            near_duplicate=_float(env, "SUBCOG_NEAR_DUPLICATE", 0.9, 0.0, 1.0),
            max_content_chars=_int(env, "SUBCOG_MAX_CONTENT_CHARS", 8000, 1, 1_000_000),
            max_tags=_int(env, "SUBCOG_MAX_TAGS", 20, 0, 1000),
            max_metadata_bytes=_int(env, "SUBCOG_MAX_METADATA_BYTES", 4096, 2, 1_000_000),
            log_level=level,
            token=env.get("SUBCOG_TOKEN", "").strip() or None,
            allowed_hosts=_list(env, "SUBCOG_ALLOWED_HOSTS"),
            allowed_origins=_list(env, "SUBCOG_ALLOWED_ORIGINS"),
        )
