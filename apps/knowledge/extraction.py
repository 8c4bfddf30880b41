"""The text of an uploaded file, for ingestion: plain text, Markdown, HTML, PDF and DOCX, within bounds.

The format comes from the file's suffix and content type, but the bytes have the last word: a file that starts
like a PDF is read as a PDF and a zip holding `word/document.xml` as a DOCX, whatever it is called, and a file
called `.pdf` or `.docx` that is not one is refused rather than read as something else.

Uploads are hostile input. Every read is bounded (settings `INFERIA_KNOWLEDGE_*`, see README): pages of a PDF,
bytes a DOCX decompresses to (a zip bomb's members are counted as they are read, declared and actual sizes
both), bytes of extracted text, and seconds of work. Extraction checks its deadline between pages and paragraphs,
and a PDF page runs under an alarm where the process can set one, so one crafted page cannot hold a worker. A
file over a bound fails as a whole with `invalid_file` (nothing is half-read); a format Inferia does not read
fails with `unsupported_file`.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
import re
import signal
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from types import FrameType
from typing import IO, Any

from django.conf import settings

logger = logging.getLogger(__name__)

ZIP_MEMBERS_MAX = 10_000
_READ_CHUNK = 1024 * 1024
PDF_MAGIC = b"%PDF-"
PDF_MAGIC_WITHIN = 1024  # readers accept a header a little after the start (some generators prepend junk)
_LEADING_BLANKS = b"\xef\xbb\xbf \t\r\n\f\x00"  # before a PDF header: a UTF-8 byte-order mark, white space
ZIP_MAGIC = b"PK\x03\x04"
DOCX_MAIN_PART = "word/document.xml"


class Format(Enum):
    TEXT = "text"
    MARKDOWN = "markdown"
    HTML = "html"
    PDF = "pdf"
    DOCX = "docx"


_BY_SUFFIX = {
    ".txt": Format.TEXT,
    ".text": Format.TEXT,
    ".md": Format.MARKDOWN,
    ".markdown": Format.MARKDOWN,
    ".html": Format.HTML,
    ".htm": Format.HTML,
    ".xhtml": Format.HTML,
    ".pdf": Format.PDF,
    ".docx": Format.DOCX,
}
_BY_CONTENT_TYPE = {
    "text/markdown": Format.MARKDOWN,
    "text/x-markdown": Format.MARKDOWN,
    "text/html": Format.HTML,
    "application/xhtml+xml": Format.HTML,
    "application/pdf": Format.PDF,
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": Format.DOCX,
}


class ExtractionFailed(Exception):
    """A file whose text cannot be read: OpenAI's error code (`invalid_file`, `unsupported_file`) and a message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class _DeadlinePassed(BaseException):
    """Raised by the alarm inside a PDF reader: a BaseException, so that the reader's own `except Exception`
    recovery cannot swallow it."""


@dataclass(frozen=True)
class ExtractionLimits:
    """How much one file may cost to read."""

    pdf_pages_max: int
    docx_bytes_max: int
    text_bytes_max: int
    seconds_max: float

    @classmethod
    def from_settings(cls) -> ExtractionLimits:
        return cls(
            pdf_pages_max=settings.INFERIA_KNOWLEDGE_PDF_PAGES_MAX,
            docx_bytes_max=settings.INFERIA_KNOWLEDGE_DOCX_BYTES_MAX,
            text_bytes_max=settings.INFERIA_KNOWLEDGE_TEXT_BYTES_MAX,
            seconds_max=settings.INFERIA_KNOWLEDGE_EXTRACT_SECONDS,
        )


@dataclass(frozen=True)
class Extracted:
    """A file's text, and whether it is Markdown (the splitter then cuts on its structure)."""

    text: str
    format: Format

    @property
    def markdown(self) -> bool:
        return self.format is Format.MARKDOWN


def text_extract(
    handle: IO[bytes], *, filename: str, content_type: str = "", limits: ExtractionLimits | None = None
) -> Extracted:
    """The text of the file open in `handle` (seekable), or ExtractionFailed saying why it cannot be read."""
    limits = limits or ExtractionLimits.from_settings()
    work = _Work(filename=filename, limits=limits, deadline=time.monotonic() + limits.seconds_max)
    head = handle.read(PDF_MAGIC_WITHIN)
    handle.seek(0)
    kind = _format_for(handle, head, filename=filename, content_type=content_type)
    if kind is Format.PDF:
        text = _pdf_text(handle, work)
    elif kind is Format.DOCX:
        text = _docx_text(handle, work)
    else:
        data = handle.read(limits.text_bytes_max + 1)
        if len(data) > limits.text_bytes_max:
            raise work.failed(f"a {kind.value} file of more than {limits.text_bytes_max} bytes")
        text = _html_text(data, work) if kind is Format.HTML else _decoded(data, work)
    text = text_clean(text)
    work.count(text)  # the final text, cleaned, is what is bounded
    return Extracted(text=text, format=kind)


def _format_for(handle: IO[bytes], head: bytes, *, filename: str, content_type: str) -> Format:
    suffix = "." + filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    media_type = content_type.split(";", 1)[0].strip().lower()
    declared = _BY_SUFFIX.get(suffix) or _BY_CONTENT_TYPE.get(media_type)
    if declared is None and media_type.startswith("text/"):
        declared = Format.TEXT
    # A PDF starts with its header; readers also accept one after some junk, but only a file declared a PDF gets that
    # benefit (a text that merely mentions "%PDF-" is still a text).
    if head.lstrip(_LEADING_BLANKS).startswith(PDF_MAGIC) or (declared is Format.PDF and PDF_MAGIC in head):
        return Format.PDF
    if head.startswith(ZIP_MAGIC):
        if _is_docx(handle):
            return Format.DOCX
        if declared is Format.DOCX:
            raise ExtractionFailed("invalid_file", f"{filename}: a zip file without {DOCX_MAIN_PART} is not a DOCX")
        raise ExtractionFailed("unsupported_file", f"{filename}: zip archives other than DOCX are not read")
    if declared in (Format.PDF, Format.DOCX):
        assert declared is not None
        raise ExtractionFailed("invalid_file", f"{filename}: the file is not a {declared.value.upper()} file")
    if declared is None:
        raise ExtractionFailed(
            "unsupported_file", f"{filename}: only text, Markdown, HTML, PDF and DOCX files are read"
        )
    return declared


def _is_docx(handle: IO[bytes]) -> bool:
    try:
        with zipfile.ZipFile(handle) as archive:
            found = DOCX_MAIN_PART in archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        found = False
    handle.seek(0)
    return found


def text_clean(text: str) -> str:
    """Line ends made `\\n`; NUL and other control characters (but newline and tab) removed, and lone surrogates
    (a damaged PDF's text) replaced: none of them may reach a stored chunk (PostgreSQL refuses NUL and invalid
    UTF-8 in text)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").translate(_CONTROL_CHARACTERS)
    try:
        text.encode()
    except UnicodeEncodeError:
        text = text.encode(errors="replace").decode()
    return text


_CONTROL_CHARACTERS = {code: None for code in range(32) if chr(code) not in "\n\t"}


@dataclass
class _Work:
    """One extraction's bounds as it goes: the deadline and the text produced so far."""

    filename: str
    limits: ExtractionLimits
    deadline: float
    text_bytes: int = 0

    def failed(self, reason: str) -> ExtractionFailed:
        return ExtractionFailed("invalid_file", f"{self.filename}: {reason}")

    def timed_out(self) -> ExtractionFailed:
        return self.failed(f"reading the text took more than {self.limits.seconds_max:g} seconds")

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise self.timed_out()

    def add(self, piece: str) -> str:
        """Count a piece of text towards the bound as it is extracted; fail as soon as the bound is passed."""
        self.text_bytes += len(piece.encode(errors="surrogatepass"))
        if self.text_bytes > self.limits.text_bytes_max:
            raise self.failed(f"more than {self.limits.text_bytes_max} bytes of text")
        self.check_time()
        return piece

    def count(self, text: str) -> None:
        if len(text.encode()) > self.limits.text_bytes_max:
            raise self.failed(f"more than {self.limits.text_bytes_max} bytes of text")


# --- Plain text and Markdown ------------------------------------------------------------------------------------------


def _decoded(data: bytes, work: _Work) -> str:
    try:
        if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return data.decode("utf-16")
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise work.failed("the text is not UTF-8") from None


# --- HTML -------------------------------------------------------------------------------------------------------------
# What a reader never sees, and the elements that start a paragraph of their own.
_HTML_DROPPED = ("head", "script", "style", "noscript", "template", "iframe", "object", "embed", "svg", "math")
_HTML_BLOCKS = frozenset(
    {
        "address", "article", "aside", "blockquote", "body", "caption", "dd", "details", "dialog", "div", "dl", "dt",
        "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr",
        "html", "legend", "li", "main", "nav", "ol", "p", "pre", "section", "summary", "table", "tbody", "tfoot",
        "thead", "tr", "ul",
    }
)  # fmt: skip
_HTML_CELLS = frozenset({"td", "th"})
_SPACES = re.compile(r"[ \t\n\r\f\v]+")


def _html_text(data: bytes, work: _Work) -> str:
    """The visible text of an HTML page, one paragraph per block element, inline whitespace collapsed."""
    import lxml.etree
    import lxml.html

    # UTF-8 unless the page is not (then lxml follows its <meta charset> or guesses).
    try:
        data.decode("utf-8")
        parser = lxml.html.HTMLParser(encoding="utf-8", remove_comments=True, remove_pis=True)
    except UnicodeDecodeError:
        parser = lxml.html.HTMLParser(remove_comments=True, remove_pis=True)
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    if not data.strip():
        return ""
    try:
        root = lxml.html.document_fromstring(data, parser=parser)
    except lxml.etree.ParserError:
        return ""  # lxml's word for a document with no element at all (only comments, say)
    except ValueError as error:
        raise work.failed(f"the HTML cannot be parsed ({error})") from None
    paragraphs: list[str] = []
    lines: list[str] = []  # the paragraph's lines so far (a <br> ends one)
    line: list[str] = []  # the current line's pieces of text

    def end_line() -> None:
        text = _SPACES.sub(" ", "".join(line)).strip()
        if text:
            lines.append(text)
        line.clear()

    def end_paragraph() -> None:
        end_line()
        if lines:
            paragraphs.append(work.add("\n".join(lines)))
        lines.clear()

    walker = lxml.etree.iterwalk(root, events=("start", "end"))
    for event, element in walker:
        tag = element.tag if isinstance(element.tag, str) else ""
        if event == "start":
            if tag in _HTML_DROPPED:
                walker.skip_subtree()  # its "end" still comes, and adds its tail
                continue
            if tag in _HTML_CELLS:
                line.append(" | " if "".join(line).strip() else " ")
            elif tag in _HTML_BLOCKS:
                end_paragraph()
            elif tag == "br":
                end_line()
            if element.text and tag:
                line.append(element.text)
        else:
            if tag in _HTML_BLOCKS:
                end_paragraph()
            if element.tail:
                line.append(element.tail)
    end_paragraph()
    return "\n\n".join(paragraphs)


# --- PDF --------------------------------------------------------------------------------------------------------------


def _pdf_text(handle: IO[bytes], work: _Work) -> str:
    """Each page's text in order, pages separated by a blank line; the page count checked before any is read."""
    from pypdf import PdfReader

    pages: list[str] = []
    try:
        with _alarm_at(work.deadline):
            reader = PdfReader(handle, strict=False)
            if reader.is_encrypted and not reader.decrypt(""):
                raise work.failed("the PDF is encrypted with a password")
            count = len(reader.pages)
            if count > work.limits.pdf_pages_max:
                raise work.failed(f"a PDF of {count} pages; at most {work.limits.pdf_pages_max} are read")
            for number in range(count):
                work.check_time()
                page_text = reader.pages[number].extract_text() or ""
                if page_text.strip():
                    pages.append(work.add(page_text.strip()))
    except ExtractionFailed:
        raise
    except _DeadlinePassed:
        raise work.timed_out() from None
    except Exception as error:  # a corrupt PDF can fail anywhere inside the reader, with any exception
        logger.info("PDF %s unreadable: %r", work.filename, error)
        raise work.failed("the PDF cannot be read (it is damaged or not a PDF)") from None
    return "\n\n".join(pages)


@contextlib.contextmanager
def _alarm_at(deadline: float) -> Iterator[None]:
    """Interrupt the code inside at `deadline` with _DeadlinePassed, through SIGALRM: a page stuck inside the PDF
    reader's Python is stopped there. Only the main thread of a process can take signals; elsewhere (a threaded
    worker) the checks between pages are the bound, and the task's time limit the last resort."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    armed = True

    def expired(signum: int, frame: FrameType | None) -> None:
        if armed:
            raise _DeadlinePassed

    started = time.monotonic()
    previous_handler: Any = signal.signal(signal.SIGALRM, expired)
    previous_delay, previous_interval = signal.setitimer(signal.ITIMER_REAL, max(0.001, deadline - started))
    try:
        yield
    finally:
        armed = False  # an alarm arriving from here on must not raise outside the guarded code
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_delay:  # someone else's alarm (a test timeout): give it back, less the time spent here
            remaining = max(0.001, previous_delay - (time.monotonic() - started))
            signal.setitimer(signal.ITIMER_REAL, remaining, previous_interval)


# --- DOCX -------------------------------------------------------------------------------------------------------------


def _docx_text(handle: IO[bytes], work: _Work) -> str:
    """Paragraphs and table cells (a row on one line, cells separated by `|`) in document order."""
    import docx

    _zip_bounded(handle, work)
    blocks: list[str] = []
    try:
        document = docx.Document(handle)
        for block in _docx_blocks(document, work):
            if block.strip():
                blocks.append(work.add(block.strip()))
    except ExtractionFailed:
        raise
    except Exception as error:  # a damaged part fails inside the reader with any exception (lxml's, KeyError, ...)
        logger.info("DOCX %s unreadable: %r", work.filename, error)
        raise work.failed("the DOCX cannot be read (it is damaged)") from None
    return "\n\n".join(blocks)


def _zip_bounded(handle: IO[bytes], work: _Work) -> None:
    """Read every member of the zip once, counting the bytes it decompresses to, before the DOCX reader loads any:
    the declared sizes first (cheap, and what the reader trusts), then the actual bytes as they come, so a member
    that lies about its size cannot decompress past the bound either."""
    bound = work.limits.docx_bytes_max
    too_big = f"the DOCX decompresses to more than {bound} bytes"
    try:
        with zipfile.ZipFile(handle) as archive:
            members = archive.infolist()
            if len(members) > ZIP_MEMBERS_MAX:
                raise work.failed(f"the DOCX has more than {ZIP_MEMBERS_MAX} parts")
            if sum(member.file_size for member in members) > bound:
                raise work.failed(too_big)
            total = 0
            for member in members:
                with archive.open(member) as part:
                    while chunk := part.read(_READ_CHUNK):
                        total += len(chunk)
                        if total > bound:
                            raise work.failed(too_big)
                        work.check_time()
    except ExtractionFailed:
        raise
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError, EOFError, ValueError) as error:
        # A CRC mismatch, an unknown compression, an encrypted or truncated member.
        logger.info("DOCX %s unreadable: %r", work.filename, error)
        raise work.failed("the DOCX cannot be read (its zip is damaged)") from None
    handle.seek(0)


def _docx_blocks(container: Any, work: _Work) -> Iterator[str]:
    """The paragraphs and table rows of a document or a table cell, in order (tables nest in cells)."""
    from docx.table import Table

    for item in container.iter_inner_content():
        work.check_time()
        if isinstance(item, Table):
            yield from _docx_rows(item, work)
        else:
            yield item.text


def _docx_rows(table: Any, work: _Work) -> Iterator[str]:
    for row in table.rows:
        seen: set[Any] = set()
        cells = []
        for cell in row.cells:
            if cell._tc in seen:  # a merged cell comes back once per grid column it spans
                continue
            seen.add(cell._tc)
            text = " ".join(block.strip() for block in _docx_blocks(cell, work) if block.strip())
            if text:
                cells.append(text)
        if cells:
            yield " | ".join(cells)
