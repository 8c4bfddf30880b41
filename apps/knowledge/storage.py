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

STORAGE_ALIAS = "knowledge"
READ_CHUNK_BYTES = 1024 * 1024


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
    handle: IO[bytes] = knowledge_storage().open(name, "rb")
    return handle


def storage_delete(name: str) -> None:
    knowledge_storage().delete(name)
