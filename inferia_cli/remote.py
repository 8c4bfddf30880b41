"""A small client for Inferia's management REST API, as the remote `inferia` verbs use it.

The stdlib's `urllib.request` keeps `inferia` quick to start and the CLI free of Django. The API key comes from
`INFERIA_API_KEY` and goes only into the Authorization header: no message, table or traceback shows it.
"""

from __future__ import annotations

import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import IO, Any

DEFAULT_URL = "http://127.0.0.1:8000"
TIMEOUT_S = 30.0
MAX_PAGES = 1000  # a runaway `next` chain stops here rather than looping for ever

_STATUS_HINTS = {
    401: "the server refused the API key (check INFERIA_API_KEY: wrong, expired or revoked)",
    403: "the API key may not do this (it needs the `read` or `manage` scope, and the role for it)",
    404: "not found (or not visible to this key)",
}
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class RemoteError(Exception):
    """A remote verb failed in a way the user can act on; the message says how, and the CLI exits non-zero."""


@dataclass(frozen=True)
class ApiClient:
    """Where the REST API answers and the key to present; one JSON request per call."""

    base_url: str
    api_key: str

    def __repr__(self) -> str:  # a dataclass repr would show the key
        return f"ApiClient(base_url={self.base_url!r})"

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET `path` (under `/api/`) with `params` as the query string (lists repeat the name)."""
        return self.request("GET", path, params=params)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.request("POST", path, body=body or {})

    def patch(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("PATCH", path, body=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def upload(self, path: str, fields: dict[str, Any], file_path: str) -> Any:
        """POST a file as `multipart/form-data` (its field named `file`, its name kept) with `fields` beside it."""
        try:
            with open(file_path, "rb") as handle:
                content = handle.read()
        except OSError as error:
            raise RemoteError(f"cannot read {file_path}: {error.strerror or error}") from None
        boundary = f"inferia-{uuid.uuid4().hex}"
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
            for name, value in fields.items()
        ]
        filename = os.path.basename(file_path).replace('"', "_").replace("\r", "_").replace("\n", "_")
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode()
        )
        data = b"".join([*parts, content, f"\r\n--{boundary}--\r\n".encode()])
        content_type = f"multipart/form-data; boundary={boundary}"
        with self._open("POST", self._url(path, None), data, content_type=content_type) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def pages(self, path: str, params: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Every row of a paginated list, following the API's `next` links."""
        page = self.get(path, params)
        for _ in range(MAX_PAGES):
            if isinstance(page, list):  # an unpaginated list
                yield from page
                return
            yield from page.get("results", [])
            if not page.get("next"):
                return
            page = self.request("GET", self._same_origin(page["next"]))

    def stream(self, path: str, params: dict[str, Any] | None = None) -> Iterator[bytes]:
        """The response body of a GET in chunks, for exports that may be large."""
        with self._open("GET", self._url(path, params), None) as response:
            while chunk := response.read(65536):
                yield chunk

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        with self._open(method, self._url(path, params), data) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def _same_origin(self, url: str) -> str:
        """A `next` link re-rooted on our base URL: the key never goes to a host the server names."""
        parts = urllib.parse.urlsplit(url)
        base = urllib.parse.urlsplit(self.base_url)
        return urllib.parse.urlunsplit((base.scheme, base.netloc, parts.path, parts.query, ""))

    def _url(self, path: str, params: dict[str, Any] | None) -> str:
        url = path if path.startswith(("http://", "https://")) else f"{self.base_url}/api/{path.lstrip('/')}"
        query = {name: value for name, value in (params or {}).items() if value is not None}
        return f"{url}?{urllib.parse.urlencode(query, doseq=True)}" if query else url

    def _open(self, method: str, url: str, data: bytes | None, content_type: str = "application/json") -> Any:
        headers = {"Authorization": f"Bearer {self.api_key}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310 - http(s) only, checked in api_client
        try:
            return urllib.request.urlopen(request, timeout=TIMEOUT_S)  # noqa: S310 - http(s) only, see api_client
        except urllib.error.HTTPError as error:
            raise RemoteError(_http_error_message(method, url, error)) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise RemoteError(f"cannot reach Inferia at {self.base_url}: {reason} (is it running? see --url)") from None


def api_client(url: str | None) -> ApiClient:
    """The client for `--url` (default `INFERIA_URL`, then http://127.0.0.1:8000) and `INFERIA_API_KEY`."""
    base = (url or os.environ.get("INFERIA_URL") or DEFAULT_URL).rstrip("/")
    if urllib.parse.urlsplit(base).scheme not in ("http", "https"):
        raise RemoteError(f"--url must be an http:// or https:// URL, not {base!r}")
    key = os.environ.get("INFERIA_API_KEY", "").strip()
    if not key:
        raise RemoteError("set INFERIA_API_KEY to an API key with the `read` (listing) or `manage` (changes) scope")
    return ApiClient(base_url=base, api_key=key)


def _http_error_message(method: str, url: str, error: urllib.error.HTTPError) -> str:
    path = urllib.parse.urlsplit(url).path
    detail = _error_detail(error)
    hint = _STATUS_HINTS.get(error.code, "")
    parts = [f"{method} {path} failed with HTTP {error.code}", hint, detail]
    return ": ".join(part for part in parts if part)


def _error_detail(error: urllib.error.HTTPError) -> str:
    """What the server said, from DRF's `{"detail": ...}`, field errors, or OpenAI's `{"error": {...}}`."""
    try:
        body = json.loads(error.read() or b"null")
    except (ValueError, OSError):
        return ""
    if isinstance(body, dict):
        if isinstance(body.get("error"), dict):
            return str(body["error"].get("message", ""))
        if "detail" in body:
            return str(body["detail"])
        return "; ".join(f"{name}: {_flat(value)}" for name, value in body.items())
    if isinstance(body, list):
        return "; ".join(_flat(item) for item in body)
    return ""


def _flat(value: Any) -> str:
    return " ".join(str(item) for item in value) if isinstance(value, list) else str(value)


def duration_parse(text: str) -> timedelta:
    """`30d`, `1h`, `90m`, `45s`, `2w` or plain seconds, as a timedelta."""
    match = _DURATION.match(text)
    if not match:
        raise RemoteError(f"not a duration: {text!r} (use e.g. 45s, 90m, 1h, 7d, 2w)")
    return timedelta(seconds=int(match[1]) * _DURATION_UNITS[match[2]])


def since_parse(text: str | None) -> str | None:
    """`--since`: a duration back from now (`7d`) or an ISO date/time, as an ISO timestamp for the API."""
    if not text:
        return None
    if _DURATION.match(text):
        return (datetime.now(UTC) - duration_parse(text)).isoformat()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise RemoteError(f"--since takes a duration (7d) or an ISO date/time, not {text!r}") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()


def organization_id(client: ApiClient, slug: str | None) -> int:
    """The organisation to act in: `--org SLUG`, or the only one the key sees."""
    rows = list(client.pages("organizations/", {"slug": slug} if slug else None))
    if slug:
        match = [row for row in rows if row.get("slug") == slug]
        if not match:
            raise RemoteError(f"no organisation {slug!r} visible to this key")
        return int(match[0]["id"])
    if len(rows) != 1:
        names = ", ".join(sorted(str(row.get("slug")) for row in rows)) or "none"
        raise RemoteError(f"this key sees {len(rows)} organisations ({names}); choose one with --org SLUG")
    return int(rows[0]["id"])


def when(value: str | None) -> str:
    """An API timestamp as a short UTC time for tables; `-` for none."""
    if not value:
        return "-"
    try:
        return datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return value


def table_print(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, out: IO[str] | None = None) -> None:
    """A plain left-aligned text table (what a terminal and `grep` both read)."""
    out = out or sys.stdout
    cells = [[str(header) for header in headers], *[["-" if cell is None else str(cell) for cell in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(), file=out)
    if not rows:
        print("(none)", file=out)


def json_print(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def rows_list_print(args: Any, path: str, columns: Sequence[tuple[str, Callable[[dict[str, Any]], Any]]]) -> int:
    """`path`'s rows the key may see, newest first, in the organisation of `--org` when given: as JSON with
    `--json`, else a table of `columns` (a header and how to read its cell from a row)."""
    client = api_client(args.url)
    params: dict[str, Any] = {"ordering": "-created_at"}
    if args.org:
        params["organization"] = organization_id(client, args.org)
    rows = list(client.pages(path, params))
    if args.json:
        json_print(rows)
        return 0
    table_print([header for header, _ in columns], [[cell(row) for _, cell in columns] for row in rows])
    return 0


def row_find(client: ApiClient, path: str, reference: str, *, field: str, noun: str) -> dict[str, Any]:
    """One of `path`'s rows by numeric id, or by the value of its unique `field` (looked up with `?search=`)."""
    if reference.isdigit():
        return dict(client.get(f"{path}{reference}/"))
    match = [row for row in client.pages(path, {"search": reference}) if row[field] == reference]
    if not match:
        raise RemoteError(f"no {noun} {reference!r} visible to this key")
    return dict(match[0])
