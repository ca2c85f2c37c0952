"""Where the store's table lives: a local directory, or a prefix on object storage.

`SUBCOG_STORE` names it: a path (the default: `DATA_DIR/lancedb`, as before), or
`s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`. LanceDB reads object
storage through the Rust `object_store` crate, configured by storage options; this module
builds them from the standard environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`), so a store on S3
or MinIO needs no setting of ours beyond its URI. Options may hold secrets: a Location's repr
and `shown` never include them, so neither logs nor `memory://stats` can.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REMOTE_SCHEMES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss")

# The AWS variables object_store understands, as storage options. The credential chain past
# these (instance profiles, web identity, ECS) object_store finds by itself.
_AWS = {
    "AWS_ACCESS_KEY_ID": "aws_access_key_id",
    "AWS_SECRET_ACCESS_KEY": "aws_secret_access_key",
    "AWS_SESSION_TOKEN": "aws_session_token",
    "AWS_REGION": "aws_region",
    "AWS_DEFAULT_REGION": "aws_region",
    "AWS_ENDPOINT_URL_S3": "aws_endpoint",
    "AWS_ENDPOINT_URL": "aws_endpoint",
    "AWS_ENDPOINT": "aws_endpoint",
    "AWS_ALLOW_HTTP": "allow_http",
    "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "aws_virtual_hosted_style_request",
    "AWS_S3_EXPRESS": "aws_s3_express",
    "AWS_WEB_IDENTITY_TOKEN_FILE": "aws_web_identity_token_file",
    "AWS_ROLE_ARN": "aws_role_arn",
}
# The option names whose values may be shown (doctor, stats): where the store is, never who
# may reach it. Every other option's value is hidden, whatever its name: GOOGLE_* and AZURE_*
# pass through as they are, and a name like azure_storage_connection_string holds a key.
_SHOWN = frozenset(
    {
        "aws_region",
        "aws_endpoint",
        "allow_http",
        "aws_virtual_hosted_style_request",
        "aws_s3_express",
        "google_bucket",
        "google_bucket_name",
        "azure_storage_account_name",
        "azure_account_name",
        "azure_storage_endpoint",
        "azure_endpoint",
        "azure_container_name",
        "azure_allow_http",
        "azure_storage_use_emulator",
        "azure_use_emulator",
        "azure_use_fabric_endpoint",
    }
)
HIDDEN = "***"


@dataclass(frozen=True)
class Location:
    """The LanceDB database URI (a directory or an object-storage prefix) and the options
    LanceDB needs to reach it."""

    db: str
    options: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def remote(self) -> bool:
        """On object storage: no lock files, no directory stamps, a refresh interval."""
        return is_remote(self.db)

    @property
    def table(self) -> str:
        """The URI of the table of memories."""
        from subcog.storage.schema import TABLE  # settings load this module: keep it light

        return f"{self.db.rstrip('/')}/{TABLE}.lance"

    @property
    def shown(self) -> str:
        """The URI without any password in it: what logs, doctor and stats show."""
        if not self.remote:
            return self.db
        parts = urlsplit(self.db)
        host = parts.hostname or ""
        return urlunsplit((parts.scheme, host, parts.path, "", ""))

    def shown_options(self) -> dict[str, str]:
        """The storage options, every value hidden but those known to hold no secret."""
        return {k: (v if k.lower() in _SHOWN else HIDDEN) for k, v in sorted(self.options.items())}

    def __repr__(self) -> str:
        # Never the URI as given (s3://KEY:SECRET@bucket) nor an option's secret value.
        return f"Location({self.shown!r}, options={self.shown_options()!r})"

    def dataset(self, **kwargs: Any) -> Any:
        """The table as a pylance dataset (upkeep's child process, CLI commands)."""
        import lance

        return lance.dataset(self.table, storage_options=dict(self.options) or None, **kwargs)


def is_remote(uri: str) -> bool:
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    return scheme in REMOTE_SCHEMES


def location_of(store: str | None, data_dir: Path, env: Mapping[str, str]) -> Location:
    """The location `SUBCOG_STORE` names (None: the data directory's, as before)."""
    if not store:
        return Location(str(data_dir / "lancedb"))
    if "://" in store and not is_remote(store) and not store.lower().startswith("file://"):
        raise ValueError(
            f"SUBCOG_STORE must be a path or an s3://, gs:// or az:// URI, not {store!r}."
        )
    if not is_remote(store):
        path = store[len("file://") :] if store.lower().startswith("file://") else store
        return Location(str(Path(path).expanduser()))
    parts = urlsplit(store)
    if not parts.hostname:
        raise ValueError(f"SUBCOG_STORE {store!r} names no bucket: write s3://bucket/prefix.")
    return Location(store.rstrip("/"), storage_options(parts.scheme.lower(), env))


def storage_options(scheme: str, env: Mapping[str, str]) -> dict[str, str]:
    """LanceDB's storage options for this scheme, from the standard environment variables."""
    options: dict[str, str] = {}
    if scheme in ("s3", "s3a"):
        for name, option in _AWS.items():
            value = env.get(name, "").strip()
            if value and option not in options:
                options[option] = value
        endpoint = options.get("aws_endpoint", "")
        if endpoint.lower().startswith("http://"):
            options.setdefault("allow_http", "true")  # MinIO, moto: plain HTTP on purpose
    else:
        prefixes = ("GOOGLE_",) if scheme in ("gs", "gcs") else ("AZURE_",)
        for name, value in env.items():
            if name.startswith(prefixes) and value.strip():
                options[name.lower()] = value.strip()
    return options


def check_bucket(location: Location) -> dict[str, float]:
    """Write a one-row table beside the store, read it back, and remove it; the milliseconds
    each took (a read is one round trip or two). Raises what the object store said."""
    import time
    import uuid

    import lancedb
    import pyarrow as pa

    db = lancedb.connect(location.db, storage_options=dict(location.options) or None)
    name = f"subcog-doctor-{uuid.uuid4().hex[:12]}"
    took: dict[str, float] = {}
    start = time.perf_counter()
    db.create_table(name, pa.table({"probe": ["subcog doctor"]}))
    took["write"] = (time.perf_counter() - start) * 1000
    try:
        start = time.perf_counter()  # a new connection: nothing cached
        again = lancedb.connect(location.db, storage_options=dict(location.options) or None)
        rows = again.open_table(name).count_rows()
        took["read"] = (time.perf_counter() - start) * 1000
        if rows != 1:
            raise RuntimeError(f"wrote 1 row and read back {rows}")
    finally:
        start = time.perf_counter()
        db.drop_table(name)
        took["delete"] = (time.perf_counter() - start) * 1000
    return took
