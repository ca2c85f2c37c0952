"""A store on object storage (SUBCOG_STORE=s3://...), against a real moto_server."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from subcog.config import Settings
from subcog.embedder import Embedder
from subcog.errors import InvalidSetting
from subcog.memory import Memory, open_store
from tests.s3 import S3, SECRET
from tests.servers import subcog_command


def test_the_store_defaults_to_the_data_dir_and_stays_local(settings: Settings) -> None:
    assert settings.store.db == str(settings.data_dir / "lancedb")
    assert not settings.store.remote
    assert settings.refresh_s == 0.0


def test_an_s3_store_takes_its_endpoint_region_and_credentials_from_the_standard_env() -> None:
    env = {
        "SUBCOG_STORE": "s3://team-bucket/subcog/",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": SECRET,
    }
    settings = Settings.from_env(env)
    assert settings.store.remote
    assert settings.store.db == "s3://team-bucket/subcog"
    assert settings.store.table == "s3://team-bucket/subcog/memories.lance"
    assert settings.refresh_s == 1.0
    assert settings.store.options == {
        "aws_endpoint": "http://127.0.0.1:9000",
        "aws_region": "eu-west-1",
        "aws_access_key_id": "AKIAEXAMPLE",
        "aws_secret_access_key": SECRET,
        "allow_http": "true",  # a plain-HTTP endpoint (MinIO, moto) is meant
    }
    assert SECRET not in repr(settings)
    assert SECRET not in json.dumps(settings.store.shown_options())
    https = Settings.from_env({**env, "AWS_ENDPOINT_URL": "https://minio.example.com"})
    assert "allow_http" not in https.store.options


def test_gcs_and_azure_stores_take_their_own_variables() -> None:
    gcs = Settings.from_env({"SUBCOG_STORE": "gs://b/p", "GOOGLE_SERVICE_ACCOUNT": "/k.json"})
    assert gcs.store.options == {"google_service_account": "/k.json"}
    azure = Settings.from_env(
        {"SUBCOG_STORE": "az://c/p", "AZURE_STORAGE_ACCOUNT_NAME": "acct", "AWS_REGION": "x"}
    )
    assert azure.store.options == {"azure_storage_account_name": "acct"}


@pytest.mark.parametrize("store", ["ftp://host/x", "s3:///no-bucket"])
def test_a_store_uri_of_another_kind_is_refused_in_our_words(store: str) -> None:
    with pytest.raises(InvalidSetting, match="SUBCOG_STORE"):
        Settings.from_env({"SUBCOG_STORE": store})


def test_a_local_path_store_is_used_as_given(tmp_path: os.PathLike[str]) -> None:
    settings = Settings.from_env({"SUBCOG_STORE": str(tmp_path), "SUBCOG_DATA_DIR": "/x"})
    assert settings.store.db == str(tmp_path)
    assert not settings.store.remote


@pytest.mark.s3
def test_remember_recall_and_forget_work_on_an_s3_store(
    s3_env: dict[str, str], embedder: Embedder
) -> None:
    settings = Settings.from_env()
    assert settings.store.remote
    memory = Memory(open_store(settings), embedder, settings)
    try:
        first = memory.remember("The deploy command is `make ship`.", scope="team")
        again = memory.remember("The deploy command is `make ship`.", scope="team")
        assert (first.status, again.status, again.id) == ("created", "exists", first.id)
        found = memory.recall("how do we deploy?", scope="team")
        assert [hit.id for hit in found.memories][:1] == [first.id]
        stats = memory.stats()
        assert stats.store == s3_env["SUBCOG_STORE"]
        assert stats.count == 1
        assert stats.disk_bytes > 0
        assert SECRET not in stats.model_dump_json()
        assert memory.forget(ids=[first.id]).forgotten == [first.id]
        assert memory.recall("how do we deploy?", scope="team").memories == []
    finally:
        memory.close()


@pytest.mark.s3
def test_doctor_checks_the_bucket_and_shows_no_secret(s3_env: dict[str, str]) -> None:
    done = subprocess.run(
        [subcog_command(), "doctor", "--json"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["bucket"]["ok"]
    assert report["bucket"]["read_ms"] > 0
    assert report["store_uri"] == s3_env["SUBCOG_STORE"]
    assert SECRET not in done.stdout + done.stderr
    plain = subprocess.run([subcog_command(), "doctor"], capture_output=True, text=True)
    assert "bucket: OK" in plain.stdout
    assert SECRET not in plain.stdout + plain.stderr


@pytest.mark.s3
def test_doctor_says_when_the_bucket_cannot_be_reached(s3: S3) -> None:
    env = {**os.environ, **s3.env("s3://no-such-bucket-here/x")}
    done = subprocess.run(
        [subcog_command(), "doctor"], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode != 0
    assert "bucket: FAILED" in done.stdout
    assert SECRET not in done.stdout + done.stderr


def lists(s3: S3, since: int) -> int:
    """How many times the bucket was listed after the first `since` requests."""
    return sum("list-type=2" in line for line in s3.requests()[since:])


@pytest.mark.s3
@pytest.mark.parametrize("refresh", ["", "0"])
def test_recall_lists_the_bucket_at_most_once_per_refresh_interval(
    s3: S3,
    s3_env: dict[str, str],
    embedder: Embedder,
    monkeypatch: pytest.MonkeyPatch,
    refresh: str,
) -> None:
    monkeypatch.setenv("SUBCOG_REFRESH_S", refresh)
    settings = Settings.from_env()
    assert settings.refresh_s == (1.0 if refresh == "" else 0.0)
    memory = Memory(open_store(settings), embedder, settings)
    try:
        memory.remember("The staging database is called ferret.")
        memory.recall("staging database")
        before, start = len(s3.requests()), time.monotonic()
        for _ in range(10):
            assert memory.recall("what is the staging database called?").memories
        elapsed = time.monotonic() - start
        if settings.refresh_s:
            assert lists(s3, before) <= 1 + elapsed / settings.refresh_s
        else:
            assert lists(s3, before) >= 10  # SUBCOG_REFRESH_S=0: the latest on every call
    finally:
        memory.close()


@pytest.mark.s3
def test_another_process_memory_is_recalled_within_the_refresh_interval(
    s3_env: dict[str, str], embedder: Embedder
) -> None:
    settings = Settings.from_env()
    here = Memory(open_store(settings), embedder, settings)
    there = Memory(open_store(settings), embedder, settings)  # a handle of its own
    try:
        assert there.recall("parking").memories == []
        stored = here.remember("Visitors park on level two of the garage.")
        deadline = time.monotonic() + settings.refresh_s + 0.5
        while not there.recall("where do visitors park?").memories:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert there.recall("where do visitors park?").memories[0].id == stored.id
        there.forget(ids=[stored.id])
        deadline = time.monotonic() + settings.refresh_s + 0.5
        while here.recall("where do visitors park?").memories:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        here.close()
        there.close()


@pytest.mark.s3
def test_the_same_text_remembered_by_two_servers_between_refreshes_is_stored_once(
    s3_env: dict[str, str], embedder: Embedder
) -> None:
    """The second server's copy of the store is up to SUBCOG_REFRESH_S old, so its check
    before the add cannot see the first's memory: the check after its commit does, and the
    first committed stays."""
    settings = Settings.from_env()
    first = Memory(open_store(settings), embedder, settings)
    second = Memory(open_store(settings), embedder, settings)
    try:
        second.recall("anything")  # its copy is read now, before the first remembers
        text = "The release train leaves every second Thursday."
        stored = first.remember(text, scope="team")
        again = second.remember(text, scope="team")  # within the refresh interval
        assert (again.status, again.id) == ("exists", stored.id)
        assert first.remember(text, scope="team").id == stored.id
        assert first.store.count() == 1
        time.sleep(settings.refresh_s + 0.2)
        assert [m.id for m in second.recall("release train", scope="team").memories] == [stored.id]
    finally:
        first.close()
        second.close()


@pytest.mark.s3
def test_a_compaction_that_loses_to_a_forget_leaves_no_copy_of_the_forgotten_text(
    s3: S3, s3_env: dict[str, str], embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another server forgets a memory while this one's compaction is rewriting it: the
    compaction's commit loses, and the files it wrote (which still hold the memory) must go
    too, or they would stay for Lance's week. The other server has not refreshed since the
    memory was stored: a forget looks in the latest version all the same."""
    from lance.optimize import Compaction

    settings = Settings.from_env()
    memory = Memory(open_store(settings), embedder, settings)
    other = Memory(open_store(settings), embedder, settings)
    secret = "Qx9-orphan-probe: the safe opens with 7731"
    try:
        doomed = memory.remember(secret)
        memory.remember("The plants are watered on Fridays.")
        memory.remember("Lunch orders go in before eleven.")
        commit = Compaction.commit
        raced: list[bool] = []

        def racing(dataset: object, rewrites: object, *args: object, **kwargs: object) -> object:
            if not raced:  # the other server's forget lands between rewrite and commit
                raced.append(True)
                assert other.forget(ids=[doomed.id]).forgotten == [doomed.id]
            return commit(dataset, rewrites, *args, **kwargs)

        monkeypatch.setattr(Compaction, "commit", racing)
        assert memory.store.upkeep_now()
        assert raced
        time.sleep(settings.refresh_s + 0.2)  # this server sees the forget within the interval
        assert doomed.id not in [m.id for m in memory.recall("what opens the safe?").memories]
        assert other.finish_erasure()  # the forgetting server erases, as it would
        bucket, prefix = s3_env["SUBCOG_STORE"].removeprefix("s3://").split("/", 1)
        holding = [k for k, body in s3.objects(bucket, prefix).items() if secret.encode() in body]
        assert holding == []
    finally:
        memory.close()
        other.close()
