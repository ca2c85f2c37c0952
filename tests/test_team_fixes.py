"""Review fixes: no credential in what doctor and logs show, client names that import back,
and one set of lock files per local store whatever the data directory."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from subcog.access import author_name, check_name
from subcog.config import Settings
from subcog.embedder import Embedder
from subcog.memory import Memory, open_store
from subcog.server import _client_name
from subcog.storage.location import location_of

# Every secret-bearing variable location.py passes on, each with a value to look for.
SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEKEYID0001",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-access-key-0002",
    "AWS_SESSION_TOKEN": "aws-session-token-0003",
    "AWS_WEB_IDENTITY_TOKEN_FILE": "/run/secrets/web-identity-0004",
    "AZURE_STORAGE_CONNECTION_STRING": (
        "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=azure-account-key-0005"
    ),
    "AZURE_STORAGE_ACCOUNT_KEY": "azure-storage-account-key-0006",
    "AZURE_STORAGE_ACCESS_KEY": "azure-storage-access-key-0007",
    "AZURE_STORAGE_SAS_TOKEN": "sv=2024&sig=azure-sas-0008",
    "AZURE_STORAGE_SAS_KEY": "azure-sas-key-0009",
    "AZURE_CLIENT_SECRET": "azure-client-secret-0010",
    "AZURE_STORAGE_TOKEN": "azure-bearer-token-0011",
    "AZURE_FEDERATED_TOKEN_FILE": "/run/secrets/azure-federated-0012",
    "GOOGLE_SERVICE_ACCOUNT_KEY": '{"private_key": "google-private-key-0013"}',
    "GOOGLE_SERVICE_ACCOUNT": "/run/secrets/google-account-0014.json",
    "GOOGLE_APPLICATION_CREDENTIALS": "/run/secrets/google-credentials-0015.json",
}
SAFE = {
    "AWS_REGION": "eu-west-1",
    "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
    "AZURE_STORAGE_ACCOUNT_NAME": "acct",
    "AZURE_CONTAINER_NAME": "memories",
    "GOOGLE_BUCKET": "team-bucket",
}


@pytest.mark.parametrize(
    "uri", ["s3://KEYID:PASSWORD@team-bucket/prefix", "gs://team-bucket/p", "az://c/p"]
)
def test_no_secret_is_ever_shown_by_doctor_or_a_repr(uri: str) -> None:
    location = location_of(uri, Path("/nowhere"), {**SECRETS, **SAFE})
    assert location.options  # the secrets are there, for LanceDB
    shown = json.dumps(location.shown_options()) + repr(location) + str(location)
    for value in [*SECRETS.values(), "KEYID", "PASSWORD"]:
        assert value not in shown
    assert repr(location).startswith(f"Location({location.shown!r}")
    assert "team-bucket" in repr(location) or "az://c/p" in repr(location)
    # each option is named, hidden or not, and the safe ones keep their values
    assert set(location.shown_options()) == set(location.options)
    for name, value in location.shown_options().items():
        if value != "***":
            assert value in [*SAFE.values(), "true"], name
    # and a repr of what holds a Location (Settings, a replaced copy) stays clean
    copy = dataclasses.replace(location)
    assert "PASSWORD" not in repr(copy)


def test_safe_options_keep_their_values() -> None:
    s3 = location_of("s3://b/p", Path("/nowhere"), {**SECRETS, **SAFE}).shown_options()
    assert s3["aws_region"] == "eu-west-1"
    assert s3["aws_endpoint"] == "http://127.0.0.1:9000"
    assert s3["allow_http"] == "true"
    assert s3["aws_secret_access_key"] == "***"
    azure = location_of("az://c/p", Path("/nowhere"), {**SECRETS, **SAFE}).shown_options()
    assert azure["azure_storage_account_name"] == "acct"
    assert azure["azure_storage_connection_string"] == "***"


def test_settings_never_show_a_secret_either() -> None:
    env = {"SUBCOG_STORE": "az://container/p", **SECRETS}
    settings = Settings.from_env(env)
    shown = repr(settings) + json.dumps(settings.store.shown_options())
    for value in SECRETS.values():
        assert value not in shown


@pytest.mark.parametrize(
    ("given", "author"),
    [
        ("Visual Studio Code", "Visual-Studio-Code"),
        ("claude-code", "claude-code"),
        ("José", "José"),  # a valid name stays as it is
        ("  Zed  (preview) / 2 ", "Zed-preview-2"),
        ("a--b", "a--b"),  # valid already
        ("a -- b", "a-b"),
        ("x" * 80 + " y", "x" * 64),
        ("🙂", None),
        (" ", None),
        ("", None),
        (None, None),
        (42, None),
    ],
)
def test_author_names_are_made_valid(given: Any, author: str | None) -> None:
    assert author_name(given) == author
    if author is not None:
        assert check_name(author) == author


def _ctx(name: str) -> Any:
    client_info = SimpleNamespace(name=name)
    return SimpleNamespace(
        session=SimpleNamespace(client_params=SimpleNamespace(client_info=client_info))
    )


def test_the_stdio_clients_name_becomes_a_valid_author() -> None:
    assert _client_name(_ctx("Visual Studio Code")) == "Visual-Studio-Code"
    assert _client_name(_ctx("!!!")) is None
    assert _client_name(None) is None


def test_an_export_with_an_author_that_is_no_valid_name_imports(
    memory: Memory, settings: Settings, embedder: Embedder, tmp_path: Path
) -> None:
    lines = [
        {"content": "the build uses uv", "author": "Visual Studio Code"},
        {"content": "tests run under pytest", "author": "🙂"},
        {"content": "deploys go through CI", "author": "claude-code"},
    ]
    report = memory.import_jsonl(json.dumps(line) for line in lines)
    assert report.added == 3
    assert report.bad_lines == []
    authors = {
        json.loads(line)["content"]: json.loads(line).get("author")
        for line in memory.export_jsonl()
    }
    assert authors == {
        "the build uses uv": "Visual-Studio-Code",
        "tests run under pytest": None,
        "deploys go through CI": "claude-code",
    }
    exported = list(memory.export_jsonl())
    memory.close()
    other = Settings.from_env({"SUBCOG_DATA_DIR": str(tmp_path / "other")})
    again = Memory(open_store(other), embedder, other)
    try:
        assert again.import_jsonl(exported).added == 3
    finally:
        again.close()


def _lock_path(store: Any) -> Path:
    return Path(store._table.write_lock.lock_file)


def test_two_data_dirs_on_one_local_store_share_its_lock_files(tmp_path: Path) -> None:
    shared = tmp_path / "shared" / "store"
    first = Settings.from_env({"SUBCOG_DATA_DIR": str(tmp_path / "a"), "SUBCOG_STORE": str(shared)})
    second = dataclasses.replace(first, data_dir=tmp_path / "b")
    assert first.store == second.store
    one = open_store(first)
    try:
        two = open_store(second)
        try:
            assert _lock_path(one) == _lock_path(two) == shared / ".write.lock"
            assert Path(one._table.index_lock.lock_file) == shared / ".index.lock"
            assert shared.stat().st_mode & 0o777 == 0o700
            # the locks shut each other out: the first holds the write lock, the second waits
            with one._table.locked():
                assert not two._table.write_lock.is_locked
                with pytest.raises(Exception, match="lock"):
                    two._table.write_lock.acquire(timeout=0.05)
            assert one._table.handle.count_rows() == 0  # LanceDB minds no lock file beside it
            assert two._table.handle.count_rows() == 0
        finally:
            two.close()
    finally:
        one.close()


def test_the_default_store_keeps_its_lock_files_in_the_data_dir(settings: Settings) -> None:
    store = open_store(settings)
    try:
        assert _lock_path(store) == settings.data_dir / ".write.lock"
        assert Path(store._table.index_lock.lock_file) == settings.data_dir / ".index.lock"
        assert not (settings.data_dir / "lancedb" / ".write.lock").exists()
    finally:
        store.close()
    # another data directory naming this one's store as SUBCOG_STORE takes the same locks
    named = Settings.from_env(
        {
            "SUBCOG_DATA_DIR": str(settings.data_dir.parent / "elsewhere"),
            "SUBCOG_STORE": str(settings.data_dir / "lancedb"),
        }
    )
    one, two = open_store(settings), open_store(named)
    try:
        assert _lock_path(one) == _lock_path(two) == settings.data_dir / ".write.lock"
    finally:
        two.close()
        one.close()
