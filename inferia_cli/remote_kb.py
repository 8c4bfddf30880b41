"""`inferia kb stores|create|upload|search|reembed|delete`: knowledge bases (vector stores), through the REST API.

Stores are named by their public id (`vs_...`, as `kb stores` shows it) or their numeric id."""

from __future__ import annotations

import argparse
from typing import Any

from inferia_cli.remote import (
    ApiClient,
    RemoteError,
    api_client,
    json_print,
    organization_id,
    row_find,
    rows_list_print,
    when,
)


def command_kb_stores(args: argparse.Namespace) -> int:
    """Every store the key may see, newest first."""
    return rows_list_print(
        args,
        "vector-stores/",
        [
            ("ID", lambda row: row["public_id"]),
            ("NAME", lambda row: row["name"]),
            ("EMBEDDING MODEL", lambda row: row["embedding_model"]),
            ("BYTES", lambda row: row["usage_bytes"]),
            ("CREATED", lambda row: when(row["created_at"])),
        ],
    )


def command_kb_create(args: argparse.Namespace) -> int:
    """Create a store; the server asks the embedding model for its vector size first."""
    client = api_client(args.url)
    body: dict[str, Any] = {"organization": organization_id(client, args.org), "name": args.name}
    if args.embedding_model:
        body["embedding_model"] = args.embedding_model
    store = client.post("vector-stores/", body)
    if args.json:
        json_print(store)
    else:
        print(f"created {store['public_id']} ({store['name']}, {store['embedding_model']}, {store['dimensions']} dims)")
    return 0


def command_kb_upload(args: argparse.Namespace) -> int:
    """Upload a file to the store's organisation, then attach it to the store (it is embedded in the background)."""
    client = api_client(args.url)
    store = store_find(client, args.store)
    file = client.upload("knowledge-files/", {"organization": store["organization"]}, args.path)
    attached = client.post("vector-store-files/", {"vector_store": store["id"], "file_id": file["public_id"]})
    if args.json:
        json_print(attached)
    else:
        print(f"uploaded {file['filename']} as {file['public_id']} ({file['bytes']} bytes) into {store['public_id']}")
        print(f"status: {attached['status']} (searchable once completed)")
    return 0


def command_kb_search(args: argparse.Namespace) -> int:
    """The store's best chunks for the query, best first."""
    client = api_client(args.url)
    store = store_find(client, args.store)
    found = client.post(f"vector-stores/{store['id']}/search/", {"query": args.query, "max_num_results": args.n})
    hits = found["data"]
    if args.json:
        json_print(hits)
        return 0
    if not hits:
        print("(no results)")
    for hit in hits:
        print(f"{hit['score']:.4f}  {hit['filename']} ({hit['file_id']}) #{hit['index']}")
        print("    " + " ".join(hit["text"].split())[:300])
    return 0


def command_kb_reembed(args: argparse.Namespace) -> int:
    """Change a store's embedding model (re-embedded in the background), or show how a change is going."""
    client = api_client(args.url)
    store = store_find(client, args.store)
    if args.model:
        store = client.patch(f"vector-stores/{store['id']}/", {"embedding_model": args.model})
    if args.json:
        json_print(store)
        return 0
    print(f"{store['public_id']}: {store['embedding_model']} ({store['dimensions']} dims)")
    if store["reembed_model"]:
        print(f"re-embedding with {store['reembed_model']} ({store['reembed_dimensions']} dims): searches use")
        print(f"{store['embedding_model']}'s vectors until every file is done")
    if store["reembed_error"]:
        print(f"last change failed: {store['reembed_error']}")
    return 0


def command_kb_delete(args: argparse.Namespace) -> int:
    """Delete a store with its chunks (its files stay, to attach elsewhere)."""
    client = api_client(args.url)
    store = store_find(client, args.store)
    client.delete(f"vector-stores/{store['id']}/")
    print(f"deleted {store['public_id']} ({store['name'] or 'unnamed'})")
    return 0


def store_find(client: ApiClient, reference: str) -> dict[str, Any]:
    """A store by numeric id or by its public id (`vs_...`)."""
    if not reference.isdigit() and not reference.startswith("vs_"):
        raise RemoteError(f"give a store's id (vs_..., as `kb stores` shows it), not {reference!r}")
    return row_find(client, "vector-stores/", reference, field="public_id", noun="vector store")
