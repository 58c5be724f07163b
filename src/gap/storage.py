"""Where images and exports live: the local data folder, or S3-compatible object storage.

Every replica reads the same images when ``GAP_STORAGE_URL`` is ``s3://bucket/prefix`` (with
``GAP_S3_ENDPOINT_URL`` for MinIO, Ceph, R2 and the like; credentials from the standard AWS
environment variables). A store maps keys (``ab/<sha256>.png``, the ``path`` column of an image) to
bytes; keys never start with ``/`` and never hold ``..``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from gap._fs import atomic_write_bytes
from gap.errors import ConfigError, GapError, NotFound, StorageError

if TYPE_CHECKING:
    from gap.config import Settings

IMAGES = "images"
EXPORTS = "exports"


def _check_key(key: str) -> str:
    if not key or key.startswith("/") or ".." in key.split("/"):
        raise ValueError(f"not a storage key: {key!r}")
    return key


class Store(ABC):
    """Bytes by key, under one root (a folder, or a bucket and prefix)."""

    @abstractmethod
    def put(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The bytes at ``key``; :class:`NotFound` when there are none."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def url(self, key: str = "") -> str:
        """Where ``key`` (default: the root) lives: a local path, or ``s3://bucket/prefix/key``."""

    @abstractmethod
    def child(self, name: str) -> Store:
        """The store rooted at ``name`` below this one (``images``, an export's name)."""

    @abstractmethod
    def keys(self) -> list[str]:
        """Every key below this root, sorted."""

    @abstractmethod
    def check(self) -> None:
        """Raise :class:`ConfigError` (one line) when the store cannot be used; called at start-up."""

    def put_tree(self, folder: Path, *, last: str | None = None) -> int:
        """Upload every file below ``folder`` under its relative path; ``last`` (a manifest) goes last,
        so a reader that finds it finds everything else too. Returns the number of files."""
        files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
        files.sort(key=lambda p: p.relative_to(folder).as_posix() == last)
        for path in files:
            self.put(path.relative_to(folder).as_posix(), path.read_bytes())
        return len(files)


class LocalStore(Store):
    """Files in a folder (the default: ``images/`` in the data folder), written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        path = Path(key)
        # Rows written by older versions may hold an absolute file path instead of a key.
        return path if path.is_absolute() else self.root / _check_key(key)

    def put(self, key: str, data: bytes) -> None:
        atomic_write_bytes(self._path(key), data)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except OSError:
            raise NotFound(f"no file {key} in {self.root}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def url(self, key: str = "") -> str:
        return str((self._path(key) if key else self.root).resolve())

    def child(self, name: str) -> LocalStore:
        return LocalStore(self.root / _check_key(name))

    def keys(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())

    def check(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"storage {self.root} is not a folder")


class S3Store(Store):
    """Objects in an S3-compatible bucket, through boto3 (the ``s3`` extra)."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None, client: Any = None):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self._client = client if client is not None else _s3_client(endpoint_url)

    def _key(self, key: str) -> str:
        key = _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, exc: Exception, what: str) -> GapError:
        from botocore.exceptions import ClientError

        where = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code in ("404", "NoSuchBucket"):
                return ConfigError(f"storage {where}: the bucket {self.bucket!r} does not exist")
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                return ConfigError(
                    f"storage {where}: access denied ({code}); check AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY"
                )
            return StorageError(f"storage {where}: {what} failed: {code} {error.get('Message', '')}".rstrip())
        endpoint = self.endpoint_url or "AWS"
        return StorageError(f"storage {where}: {what} failed ({endpoint}): {type(exc).__name__}: {exc}")

    def put(self, key: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(exc, f"writing {key}") from None

    def get(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return bytes(self._client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read())
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise NotFound(f"no object {self.url(key)}") from None
            raise self._fail(exc, f"reading {key}") from None
        except BotoCoreError as exc:
            raise self._fail(exc, f"reading {key}") from None

    def exists(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return False
            raise self._fail(exc, f"looking up {key}") from None
        except BotoCoreError as exc:
            raise self._fail(exc, f"looking up {key}") from None
        return True

    def url(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self._key(key) if key else self.prefix}".rstrip("/")

    def child(self, name: str) -> S3Store:
        return S3Store(self.bucket, self._key(name), endpoint_url=self.endpoint_url, client=self._client)

    def keys(self) -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        start = f"{self.prefix}/" if self.prefix else ""
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start)
            return sorted(item["Key"][len(start) :] for page in pages for item in page.get("Contents", []))
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(exc, "listing") from None

    def check(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            failure = self._fail(exc, "reaching the bucket")
            raise ConfigError(failure.message) from None


def _s3_client(endpoint_url: str | None) -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:
        raise ConfigError(f"S3 storage needs boto3: pip install 'gap[s3]' ({exc})") from None
    # Few, short retries: a wrong endpoint should fail a start-up in seconds, not minutes.
    config = Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=30)
    return boto3.client("s3", endpoint_url=endpoint_url, config=config)


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> ``(bucket, prefix)``."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ConfigError(f"not an S3 URL (s3://bucket/prefix): {url!r}")
    return parsed.netloc, parsed.path.strip("/")


def is_s3_url(value: str) -> bool:
    return value.startswith("s3://")


def s3_store(url: str, settings: Settings) -> S3Store:
    bucket, prefix = parse_s3_url(url)
    return S3Store(bucket, prefix, endpoint_url=settings.s3_endpoint_url)


def open_store(settings: Settings) -> Store:
    """The root store of ``settings``: ``GAP_STORAGE_URL``, else the data folder."""
    url = settings.storage_url
    if url is None or not url.strip():
        return LocalStore(settings.data_dir)
    if is_s3_url(url):
        return s3_store(url, settings)
    if "://" in url:
        raise ConfigError(f"GAP_STORAGE_URL must be s3://bucket/prefix or a folder, got {url!r}")
    return LocalStore(Path(url))


def export_store(settings: Settings) -> Store:
    """Where the dashboard's exports live: ``exports/`` below the root store, one folder each."""
    return open_store(settings).child(EXPORTS)


def image_store(settings: Settings, *, check: bool = False) -> Store:
    """Where the pools' images live: ``images/`` below the root store; ``check``: refuse at once
    (:class:`ConfigError`, one line) a store that cannot be reached, before any work starts."""
    store = open_store(settings).child(IMAGES)
    if check:
        store.check()
    return store


def s3_reader(settings: Settings) -> Callable[[str], bytes]:
    """Reads ``s3://bucket/key`` references (a record's image in an export) with one client."""
    client = None

    def read(ref: str) -> bytes:
        nonlocal client
        bucket, key = parse_s3_url(ref)
        client = client or _s3_client(settings.s3_endpoint_url)
        return S3Store(bucket, endpoint_url=settings.s3_endpoint_url, client=client).get(key)

    return read
