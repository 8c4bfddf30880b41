"""Where uploaded files' bytes live: Django's storage API under the `knowledge` alias of STORAGES (a folder under the
data directory by default, an S3-compatible bucket through django-storages in production; see settings.py).

Names are ours (organisation id, file id), never a client's filename, so that nothing a client sends chooses a path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from django.core.files.base import File
from django.core.files.storage import Storage, storages
from storages.backends.s3 import S3File

STORAGE_ALIAS = "knowledge"
READ_CHUNK_BYTES = 1024 * 1024
# A download's blocks (FileResponse reads 4 KB at a time unless told): fewer, larger sends for large files.
STREAM_BLOCK_BYTES = 64 * 1024


def knowledge_storage() -> Storage:
    return storages[STORAGE_ALIAS]


def storage_name_for(*, organization_id: int, public_id: str) -> str:
    return f"files/{organization_id}/{public_id}"


@dataclass(frozen=True)
class StoredBytes:
    """What was written: the name the storage chose, the size and the SHA-256."""

    name: str
    size: int
    sha256: str


class _Hashing(File):  # type: ignore[type-arg]
    """A file wrapper that hashes and counts what the storage reads from it, so an upload is read once."""

    def __init__(self, handle: IO[bytes]) -> None:
        super().__init__(handle)
        self.source = handle
        self.digest = hashlib.sha256()
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data: bytes = self.source.read(size)
        self.digest.update(data)
        self.count += len(data)
        return data

    def chunks(self, chunk_size: int | None = None) -> Iterator[bytes]:
        while data := self.read(chunk_size or READ_CHUNK_BYTES):
            yield data


def storage_save(*, name: str, handle: IO[bytes]) -> StoredBytes:
    """Write `handle`'s bytes under `name` (streamed: never all in memory)."""
    if hasattr(handle, "seek"):
        handle.seek(0)
    wrapped = _Hashing(handle)
    saved = knowledge_storage().save(name, wrapped)
    return StoredBytes(name=saved, size=wrapped.count, sha256=wrapped.digest.hexdigest())


def storage_open(name: str) -> IO[bytes]:
    """A seekable handle on the bytes (what the extractors need). From a bucket, the backend reads the object into a
    temporary file that spills to disk past its `max_memory_size`."""
    handle: IO[bytes] = knowledge_storage().open(name, "rb")
    return handle


def storage_stream(name: str) -> IO[bytes]:
    """A handle to read the bytes once, front to back (a download): from a bucket, the object's body as it comes off
    the network rather than a local copy first. FileNotFoundError when there is no such object."""
    handle = knowledge_storage().open(name, "rb")
    if isinstance(handle, S3File):
        # Opening the S3File checked that the object exists; its own reads would download it whole before the first.
        body: IO[bytes] = handle.obj.get()["Body"]
        return body
    opened: IO[bytes] = handle
    return opened


def storage_delete(name: str) -> None:
    knowledge_storage().delete(name)
