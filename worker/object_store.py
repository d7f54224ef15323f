"""An S3-compatible bucket (``ATCON_STORAGE_URL=s3://bucket/prefix``) through boto3.

The only module that talks to the object store. :class:`ObjectStore` offers what the
storage backend (:class:`worker.storage_s3.ObjectStorage`) needs and nothing more:
whole-object puts and gets, conditional creation (``If-None-Match: *``), listing,
deletion by prefix, and :meth:`ObjectStore.open`, a seekable read-only file over ranged
``GET`` requests, so PyAV decodes a video straight from the bucket without copying it.

The endpoint and credentials come from boto3's usual sources: ``AWS_ENDPOINT_URL``
(or ``AWS_ENDPOINT_URL_S3``), ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_REGION``/``AWS_DEFAULT_REGION``, a profile or an instance role. boto3 is imported
when a store is opened, so a process on the local backend never imports it; it never
imports torch.

Every failure of the store becomes :class:`~worker._exceptions.ObjectStoreError`,
whose message names the bucket and the operation, never an object's content.
"""

from __future__ import annotations

import io
import logging
import os
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ._exceptions import ObjectStoreError, SettingsError

__all__ = ["ObjectStore", "RangeReader", "StoreLocation", "parse_storage_url"]

logger = logging.getLogger(__name__)

#: bytes fetched per ranged GET while a video is decoded from the store
READ_BLOCK_BYTES = 1 << 20


@dataclass(frozen=True)
class StoreLocation:
    """Where the service keeps its objects: a bucket and a key prefix (``""`` or ``a/b/``)."""

    bucket: str
    prefix: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def parse_storage_url(url: str) -> StoreLocation:
    """``s3://bucket`` or ``s3://bucket/some/prefix`` -> :class:`StoreLocation`;
    ``SettingsError`` for anything else."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise SettingsError(
            f"ATCON_STORAGE_URL must look like s3://bucket or s3://bucket/prefix, got {url!r:.120}"
        )
    prefix = parts.path.strip("/")
    if any(piece in ("", ".", "..") for piece in prefix.split("/")) and prefix:
        raise SettingsError(f"ATCON_STORAGE_URL's prefix {prefix!r:.80} has an empty or dot part")
    return StoreLocation(parts.netloc, f"{prefix}/" if prefix else "")


def _is_missing(exc: Exception) -> bool:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    code = str(response.get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


def _status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if isinstance(status, int) else None
    return None


class ObjectStore:
    """The objects under one bucket and prefix; ``name`` arguments are relative to it."""

    def __init__(self, location: StoreLocation | str, client: Any = None) -> None:
        self.location = parse_storage_url(location) if isinstance(location, str) else location
        if client is None:
            import boto3
            from botocore.config import Config

            config = Config(
                connect_timeout=5,
                read_timeout=60,
                retries={"max_attempts": 5, "mode": "standard"},
            )
            client = boto3.client("s3", config=config)
        self.client = client

    @property
    def bucket(self) -> str:
        return self.location.bucket

    def key(self, name: str) -> str:
        return self.location.prefix + name

    def _fail(self, what: str, name: str, exc: Exception) -> ObjectStoreError:
        # the key holds only server-chosen ids and fixed names; never content
        return ObjectStoreError(
            f"object store {self.location.url}: {what} {name!r} failed: "
            f"{type(exc).__name__}: {str(exc)[:200]}"
        )

    def check(self) -> None:
        """Raise ``ObjectStoreError`` unless the bucket answers (it must exist)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            raise ObjectStoreError(
                f"object store {self.location.url} is not usable: {type(exc).__name__}: "
                f"{str(exc)[:200]}; check ATCON_STORAGE_URL, AWS_ENDPOINT_URL and the "
                "credentials, and that the bucket exists"
            ) from exc

    # -- writes ---------------------------------------------------------------------------

    def put_bytes(self, name: str, data: bytes, *, if_absent: bool = False) -> bool:
        """Store ``data`` at ``name``. With ``if_absent``, only if no object is there
        (a conditional write, ``If-None-Match: *``): False when one was."""
        extra = {"IfNoneMatch": "*"} if if_absent else {}
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.key(name), Body=data, **extra)
        except Exception as exc:
            if if_absent and _status(exc) in (409, 412):
                return False
            raise self._fail("writing", name, exc) from exc
        return True

    def put_file(self, name: str, path: Path) -> str:
        """Upload a local file (multipart above boto3's threshold); return its ETag."""
        try:
            self.client.upload_file(str(path), self.bucket, self.key(name))
            answer = self.client.head_object(Bucket=self.bucket, Key=self.key(name))
        except Exception as exc:
            raise self._fail("uploading", name, exc) from exc
        return str(answer.get("ETag", ""))

    # -- reads ----------------------------------------------------------------------------

    def get_bytes(self, name: str) -> bytes | None:
        """The object's bytes, or None when there is none."""
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self.key(name))
            return bytes(answer["Body"].read())
        except Exception as exc:
            if _is_missing(exc):
                return None
            raise self._fail("reading", name, exc) from exc

    def get_if_changed(self, name: str, etag: str | None) -> tuple[bool, bytes | None, str | None]:
        """``(changed, data, etag)``: the object unless its ETag is still ``etag`` (one
        conditional GET; ``(False, None, etag)`` on 304), ``(True, None, None)`` when
        there is no such object."""
        extra = {"IfNoneMatch": etag} if etag else {}
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self.key(name), **extra)
        except Exception as exc:
            if etag and _status(exc) == 304:
                return False, None, etag
            if _is_missing(exc):
                return True, None, None
            raise self._fail("reading", name, exc) from exc
        return True, bytes(answer["Body"].read()), str(answer.get("ETag", ""))

    def _head(self, name: str) -> dict[str, Any] | None:
        """The object's metadata (HEAD), or None when there is none."""
        try:
            answer: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=self.key(name))
        except Exception as exc:
            if _is_missing(exc):
                return None
            raise self._fail("looking up", name, exc) from exc
        return answer

    def size(self, name: str) -> int | None:
        """The object's size in bytes, or None when there is none."""
        answer = self._head(name)
        return None if answer is None else int(answer["ContentLength"])

    def etag(self, name: str) -> str | None:
        """The object's ETag, or None when there is none."""
        answer = self._head(name)
        return None if answer is None else str(answer.get("ETag", ""))

    def exists(self, name: str) -> bool:
        return self.size(name) is not None

    def download(self, name: str, path: Path) -> bool:
        """Copy the object into ``path`` (written in place: give a temporary name);
        False when there is no such object."""
        try:
            self.client.download_file(self.bucket, self.key(name), str(path))
        except Exception as exc:
            if _is_missing(exc):
                return False
            raise self._fail("downloading", name, exc) from exc
        return True

    def read_range(self, name: str, start: int, end: int) -> bytes:
        """Bytes ``start`` to ``end`` inclusive (one ranged GET)."""
        try:
            answer = self.client.get_object(
                Bucket=self.bucket, Key=self.key(name), Range=f"bytes={start}-{end}"
            )
            return bytes(answer["Body"].read())
        except Exception as exc:
            raise self._fail("reading a range of", name, exc) from exc

    def open(self, name: str, block_bytes: int = READ_BLOCK_BYTES) -> io.BufferedReader:
        """A seekable binary file over the object, read in ranged GETs of
        ``block_bytes``; ``FileNotFoundError`` when there is no such object."""
        size = self.size(name)
        if size is None:
            raise FileNotFoundError(f"no object {name!r} in {self.location.url}")
        reader = RangeReader(self, name, size, block_bytes)
        return io.BufferedReader(reader, buffer_size=64 << 10)

    def names(self, prefix: str = "") -> Iterator[str]:
        """Names (relative to the store's prefix) of every object under ``prefix``."""
        for name, _etag, _modified in self._entries(prefix):
            yield name

    def listing(self, prefix: str = "") -> dict[str, str]:
        """``{name: etag}`` of every object under ``prefix`` (names relative to the
        store's prefix), from one paginated LIST."""
        return {name: etag for name, etag, _modified in self._entries(prefix)}

    def modified(self, prefix: str = "") -> dict[str, float]:
        """``{name: last modified, Unix seconds}`` of every object under ``prefix``."""
        return {name: modified for name, _etag, modified in self._entries(prefix)}

    def _entries(self, prefix: str) -> Iterator[tuple[str, str, float]]:
        paginator = self.client.get_paginator("list_objects_v2")
        strip = len(self.location.prefix)
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.key(prefix)):
                for entry in page.get("Contents", []):
                    when = entry.get("LastModified")
                    yield (
                        str(entry["Key"])[strip:],
                        str(entry.get("ETag", "")),
                        when.timestamp() if hasattr(when, "timestamp") else 0.0,
                    )
        except Exception as exc:
            raise self._fail("listing", prefix, exc) from exc

    # -- deletion -------------------------------------------------------------------------

    def delete(self, names: list[str]) -> None:
        """Delete these objects (absent ones are no error)."""
        for start in range(0, len(names), 1000):
            chunk = names[start : start + 1000]
            try:
                answer = self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": self.key(n)} for n in chunk], "Quiet": True},
                )
            except Exception as exc:
                raise self._fail("deleting", chunk[0], exc) from exc
            errors = answer.get("Errors") or []
            if errors:
                raise ObjectStoreError(
                    f"object store {self.location.url}: {len(errors)} objects were not "
                    f"deleted, the first {errors[0].get('Key')!r}: {errors[0].get('Code')}"
                )

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix``; return how many there were."""
        names = list(self.names(prefix))
        self.delete(names)
        return len(names)


class RangeReader(io.RawIOBase):
    """The raw, seekable reader under :meth:`ObjectStore.open`.

    The object is read in aligned blocks of ``block_bytes``, one ranged GET each, and
    the last ``cache_blocks`` are kept: a demuxer's seeks back and forth (an MP4's index
    at the end, interleaved streams) are served from them instead of fetching again.
    The object's size is fixed when it is opened (this service never rewrites an
    object in place)."""

    def __init__(
        self, store: ObjectStore, name: str, size: int, block_bytes: int, cache_blocks: int = 8
    ) -> None:
        super().__init__()
        if block_bytes < 1 or cache_blocks < 1:
            raise ValueError("block_bytes and cache_blocks must be positive")
        self.store = store
        self.name = name
        self.size = size
        self.block_bytes = block_bytes
        self.cache_blocks = cache_blocks
        self.position = 0
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        #: ranged GETs made and bytes they brought: the tests and the benchmark check
        #: that a decode fetches each part of the file about once
        self.requests = 0
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            target = offset
        elif whence == os.SEEK_CUR:
            target = self.position + offset
        elif whence == os.SEEK_END:
            target = self.size + offset
        else:
            raise ValueError(f"whence must be 0, 1 or 2, got {whence}")
        if target < 0:
            raise ValueError(f"negative seek position {target}")
        self.position = target
        return target

    def _block(self, index: int) -> bytes:
        block = self._blocks.get(index)
        if block is not None:
            self._blocks.move_to_end(index)
            return block
        start = index * self.block_bytes
        end = min(self.size, start + self.block_bytes) - 1
        block = self.store.read_range(self.name, start, end)
        self.requests += 1
        self.bytes_read += len(block)
        self._blocks[index] = block
        while len(self._blocks) > self.cache_blocks:
            self._blocks.popitem(last=False)
        return block

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), max(0, self.size - self.position))
        done = 0
        while done < wanted:
            index, offset = divmod(self.position, self.block_bytes)
            block = self._block(index)
            piece = block[offset : offset + wanted - done]
            if not piece:  # the object is shorter than when it was opened
                break
            view[done : done + len(piece)] = piece
            done += len(piece)
            self.position += len(piece)
        return done
