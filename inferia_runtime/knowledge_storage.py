"""Where knowledge files' bytes live, from the environment: a folder under the data directory by default, or an
S3-compatible bucket (AWS S3, MinIO, Ceph, R2, ...) through django-storages' S3 backend when a bucket is named.

The secret access key is read here and handed to the backend only: no message built here ever includes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inferia_runtime.env import ConfigError, env_str

S3_BACKEND = "storages.backends.s3.S3Storage"
FOLDER_BACKEND = "django.core.files.storage.FileSystemStorage"
# What a read keeps in memory before the backend spools the object to a temporary file: ingestion's readers seek,
# so they read a local copy, but a 512 MB upload must not become 512 MB of a worker's memory.
S3_READ_MEMORY_BYTES = 8 * 1024 * 1024
ADDRESSING_STYLES = ("auto", "path", "virtual")


def knowledge_storage_config(*, default_location: Path | str) -> dict[str, Any]:
    """The `knowledge` entry of STORAGES: the S3 backend when INFERIA_KNOWLEDGE_S3_BUCKET is set, else the folder."""
    bucket = env_str("INFERIA_KNOWLEDGE_S3_BUCKET")
    if not bucket:
        return {
            "BACKEND": FOLDER_BACKEND,
            "OPTIONS": {"location": str(default_location), "file_permissions_mode": 0o600},
        }
    options: dict[str, Any] = {
        "bucket_name": bucket,
        "location": env_str("INFERIA_KNOWLEDGE_S3_PREFIX").strip("/"),
        # Our names are unique (organisation id, file id): overwriting skips an existence check per upload, and the
        # backend never answers with a name other than the one asked for.
        "file_overwrite": True,
        "default_acl": None,
        "querystring_auth": False,
        "max_memory_size": S3_READ_MEMORY_BYTES,
    }
    for option, name in (("endpoint_url", "ENDPOINT_URL"), ("region_name", "REGION")):
        if value := env_str(f"INFERIA_KNOWLEDGE_S3_{name}"):
            options[option] = value
    style = env_str("INFERIA_KNOWLEDGE_S3_ADDRESSING_STYLE").lower()
    if style and style not in ADDRESSING_STYLES:
        raise ConfigError(f"INFERIA_KNOWLEDGE_S3_ADDRESSING_STYLE must be one of {', '.join(ADDRESSING_STYLES)}")
    if style:
        options["addressing_style"] = style
    options.update(_credentials())
    return {"BACKEND": S3_BACKEND, "OPTIONS": options}


def _credentials() -> dict[str, str]:
    """Both keys, or neither (then boto3's own chain: AWS_* variables, a profile, an instance or pod role)."""
    key_id = env_str("INFERIA_KNOWLEDGE_S3_ACCESS_KEY_ID")
    secret = env_str("INFERIA_KNOWLEDGE_S3_SECRET_ACCESS_KEY")
    if bool(key_id) != bool(secret):
        raise ConfigError(
            "INFERIA_KNOWLEDGE_S3_ACCESS_KEY_ID and INFERIA_KNOWLEDGE_S3_SECRET_ACCESS_KEY go together: set both, "
            "or neither to use boto3's default credentials"
        )
    return {"access_key": key_id, "secret_key": secret} if key_id else {}
