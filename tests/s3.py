"""A real S3-protocol server for the object-storage tests: moto_server (a test dependency,
`moto[server]`), started on a free loopback port for the session and stopped after it.

Tests that need it take the `s3` fixture (or `s3_env`) and are marked `s3`; nothing skips them:
if moto_server cannot start, they fail and say why.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REGION = "us-east-1"
# moto accepts any credentials; these stand for a real secret, which must never be shown.
KEY_ID = "subcog-test-key"
SECRET = "subcog-test-secret-do-not-show"


@dataclass(frozen=True)
class S3:
    """A running moto_server."""

    endpoint: str
    log: Path  # moto_server's request log: one line per request

    def requests(self) -> list[str]:
        """The requests moto_server has answered so far, as its log lines."""
        return [
            line for line in self.log.read_text(errors="replace").splitlines() if "HTTP/" in line
        ]

    def client(self) -> Any:
        """A boto3 client on it (boto3 comes with moto)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=KEY_ID,
            aws_secret_access_key=SECRET,
        )

    def bucket(self) -> str:
        """A new, empty bucket."""
        name = f"subcog-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def env(self, store: str) -> dict[str, str]:
        """The environment a subcog process needs for a store at this URI."""
        return {
            "SUBCOG_STORE": store,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET,
        }

    def objects(self, bucket: str, prefix: str = "") -> dict[str, bytes]:
        """Every object under the prefix, with its bytes."""
        client = self.client()
        found: dict[str, bytes] = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                try:
                    body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"]
                except client.exceptions.NoSuchKey:
                    continue  # removed since the listing (upkeep's cleanup)
                found[item["Key"]] = body.read()
        return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def moto_command() -> list[str]:
    here = Path(sys.executable).parent / ("moto_server.exe" if os.name == "nt" else "moto_server")
    if here.exists():
        return [str(here)]
    return [sys.executable, "-m", "moto.server"]


def running_moto(log: Path) -> Iterator[S3]:
    """Start moto_server on a free loopback port, wait until it answers, stop it after."""
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*moto_command(), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"moto_server did not start (pip install 'moto[server]'): "
                        f"{log.read_text(errors='replace')[-2000:]}"
                    ) from None
                time.sleep(0.2)
        yield S3(endpoint, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
