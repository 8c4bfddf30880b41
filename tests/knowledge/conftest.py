"""Knowledge test fixtures: each test's uploaded files in a folder of its own."""

from __future__ import annotations

import pytest
from django.core.files.storage import storages


def _forget_storage() -> None:
    storages._storages.pop("knowledge", None)
    storages._backends = None


@pytest.fixture(autouse=True)
def knowledge_files(tmp_path, settings):
    """The `knowledge` storage in the test's temporary folder (Django caches storages: drop the cached one)."""
    settings.STORAGES = {
        **settings.STORAGES,
        "knowledge": {"BACKEND": settings.STORAGES["knowledge"]["BACKEND"], "OPTIONS": {"location": str(tmp_path)}},
    }
    _forget_storage()
    yield tmp_path
    _forget_storage()
