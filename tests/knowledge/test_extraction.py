"""Reading a file's text for ingestion: the format from its name, type and bytes; HTML's visible text, PDF pages,
DOCX paragraphs and tables; and the bounds (pages, decompressed bytes, text, seconds) that fail a hostile file."""

from __future__ import annotations

import io
import time
import zipfile

import pytest

from apps.knowledge.extraction import ExtractionFailed, ExtractionLimits, text_extract
from tests.knowledge.documents import docx_bytes, pdf_bytes, zip_declaring, zip_with

ROOMY = ExtractionLimits(pdf_pages_max=100, docx_bytes_max=64 * 1024 * 1024, text_bytes_max=1024 * 1024, seconds_max=30)


def _limits(**changes) -> ExtractionLimits:
    return ExtractionLimits(**{**ROOMY.__dict__, **changes})


def _text(data: bytes, filename: str, content_type: str = "", limits: ExtractionLimits = ROOMY) -> str:
    return text_extract(io.BytesIO(data), filename=filename, content_type=content_type, limits=limits).text


def _failure(data: bytes, filename: str, content_type: str = "", limits: ExtractionLimits = ROOMY) -> ExtractionFailed:
    with pytest.raises(ExtractionFailed) as caught:
        text_extract(io.BytesIO(data), filename=filename, content_type=content_type, limits=limits)
    assert filename in caught.value.message
    return caught.value


# --- Text and Markdown ----------------------------------------------------------------------------------------------


def test_it_reads_plain_text_without_nul_or_control_characters():
    assert _text(b"GPU\x00 memory\x07 is high.\r\nSecond line.", "notes.txt") == "GPU memory is high.\nSecond line."


def test_it_reads_markdown_as_markdown_and_utf16_with_its_byte_order_mark():
    extracted = text_extract(io.BytesIO(b"# Title\n\nBody."), filename="README.md", limits=ROOMY)
    assert (extracted.text, extracted.markdown) == ("# Title\n\nBody.", True)
    assert _text("Grüße".encode("utf-16"), "greeting.txt") == "Grüße"


def test_a_text_file_that_is_not_utf8_is_invalid():
    failure = _failure(b"caf\xe9 \xfa", "latin.txt")
    assert (failure.code, "UTF-8" in failure.message) == ("invalid_file", True)


# --- HTML -----------------------------------------------------------------------------------------------------------

PAGE = b"""<!doctype html>
<html><head><title>Handbook</title><style>p { color: red }</style>
<script>var secret = "never indexed";</script></head>
<body>
  <h1>GPU nodes</h1>
  <script>document.write("Ignore this script")</script>
  <p>Each node has <b>141 GB</b>
     of memory.</p>
  <ul><li>Fast</li><li>Cool</li></ul>
  <table><tr><th>Model</th><th>Memory</th></tr><tr><td>H200</td><td>141 GB</td></tr></table>
  <div>Line one<br>line two<!-- a comment --></div>
  <noscript>Enable JavaScript</noscript>
</body></html>"""


def test_html_keeps_the_visible_text_one_paragraph_per_block_and_drops_scripts_styles_and_head():
    assert _text(PAGE, "handbook.html") == (
        "GPU nodes\n\nEach node has 141 GB of memory.\n\nFast\n\nCool\n\nModel | Memory\n\nH200 | 141 GB\n\n"
        "Line one\nline two"
    )


def test_html_is_recognised_by_its_content_type_and_in_its_declared_charset():
    page = '<html><head><meta charset="iso-8859-1"></head><body><p>Café crème</p></body></html>'.encode("latin-1")
    assert _text(page, "page", content_type="text/html; charset=iso-8859-1") == "Café crème"


# --- PDF ------------------------------------------------------------------------------------------------------------


def test_a_pdf_is_read_page_by_page_in_order():
    data = pdf_bytes(["GPU memory bandwidth (HBM3e)\nis 4.8 TB/s.", "Page two follows."])
    assert _text(data, "report.pdf") == "GPU memory bandwidth (HBM3e)\nis 4.8 TB/s.\n\nPage two follows."


def test_a_pdf_under_another_name_is_still_read_as_a_pdf():
    data = pdf_bytes(["Mislabelled but real."])
    assert _text(data, "notes.txt", content_type="text/plain") == "Mislabelled but real."


def test_a_file_called_pdf_that_is_not_one_or_is_damaged_is_invalid():
    assert _failure(b"Just some text.", "report.pdf").code == "invalid_file"
    damaged = _failure(b"%PDF-1.7\n1 0 obj << /Type /Catalog >> garbage", "report.pdf")
    assert (damaged.code, "cannot be read" in damaged.message) == ("invalid_file", True)
    truncated = pdf_bytes(["Cut short."])[:200]
    assert _failure(truncated, "report.pdf").code == "invalid_file"


def test_a_text_that_mentions_the_pdf_header_is_still_a_text():
    assert _text(b"A PDF starts with %PDF-1.7 on its first line.", "notes.md").startswith("A PDF starts")


def test_a_pdf_with_more_pages_than_the_bound_fails_before_any_is_read():
    data = pdf_bytes([f"Page {n}." for n in range(5)])
    assert _text(data, "five.pdf", limits=_limits(pdf_pages_max=5)).count("Page") == 5
    failure = _failure(data, "five.pdf", limits=_limits(pdf_pages_max=4))
    assert failure.code == "invalid_file"
    assert "5 pages" in failure.message
    assert "4" in failure.message


def test_the_page_bound_comes_from_settings(settings):
    settings.INFERIA_KNOWLEDGE_PDF_PAGES_MAX = 1
    with pytest.raises(ExtractionFailed, match="2 pages"):
        text_extract(io.BytesIO(pdf_bytes(["One.", "Two."])), filename="two.pdf")


def test_a_pdf_page_stuck_in_the_reader_is_stopped_at_the_deadline(monkeypatch):
    from pypdf import PageObject

    def stuck(self, *args, **kwargs):
        while True:  # a crafted page that keeps the reader busy in Python
            time.sleep(0.001)

    monkeypatch.setattr(PageObject, "extract_text", stuck)
    started = time.monotonic()
    failure = _failure(pdf_bytes(["Never ends."]), "slow.pdf", limits=_limits(seconds_max=0.5))
    assert time.monotonic() - started < 5
    assert failure.code == "invalid_file"
    assert "0.5 seconds" in failure.message


def test_reading_stops_between_pages_once_the_time_is_spent():
    failure = _failure(pdf_bytes([f"Page {n}." for n in range(3)]), "late.pdf", limits=_limits(seconds_max=0))
    assert failure.code == "invalid_file"
    assert "seconds" in failure.message


# --- DOCX -----------------------------------------------------------------------------------------------------------


def test_a_docx_gives_its_paragraphs_and_table_cells_in_order():
    data = docx_bytes(["Quarterly report.", "GPU fleet below."], table=[["Model", "Memory"], ["H200", "141 GB"]])
    assert _text(data, "report.docx") == "Quarterly report.\n\nGPU fleet below.\n\nModel | Memory\n\nH200 | 141 GB"


def test_a_docx_called_something_else_is_still_read_as_a_docx():
    assert _text(docx_bytes(["Real DOCX."]), "upload.bin", "application/octet-stream") == "Real DOCX."


def test_a_zip_bomb_docx_fails_on_its_declared_size():
    bomb = zip_with(docx_bytes(["Looks harmless."]), "word/media/image1.bin", bytes(8 * 1024 * 1024))
    assert len(bomb) < 100_000
    failure = _failure(bomb, "bomb.docx", limits=_limits(docx_bytes_max=4 * 1024 * 1024))
    assert failure.code == "invalid_file"
    assert "decompresses to more than 4194304 bytes" in failure.message


def test_a_zip_bomb_docx_that_lies_about_its_size_fails_as_it_is_read():
    bomb = zip_with(docx_bytes(["Looks harmless."]), "word/media/image1.bin", bytes(8 * 1024 * 1024))
    lying = zip_declaring(bomb, "word/media/image1.bin", declared=100)
    with zipfile.ZipFile(io.BytesIO(lying)) as archive:
        assert sum(member.file_size for member in archive.infolist()) < 4 * 1024 * 1024
    assert _failure(lying, "bomb.docx", limits=_limits(docx_bytes_max=4 * 1024 * 1024)).code == "invalid_file"


def test_a_docx_with_more_text_than_the_bound_fails():
    data = docx_bytes(["A sentence of forty bytes, give or take."] * 100)
    assert len(_text(data, "long.docx")) > 4000
    failure = _failure(data, "long.docx", limits=_limits(text_bytes_max=1000))
    assert failure.code == "invalid_file"
    assert "more than 1000 bytes of text" in failure.message


def test_a_zip_that_is_not_a_docx_is_unsupported_and_a_damaged_docx_invalid():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("xl/workbook.xml", "<workbook/>")
    assert _failure(out.getvalue(), "sheet.xlsx").code == "unsupported_file"
    assert _failure(out.getvalue(), "letter.docx").code == "invalid_file"
    assert _failure(docx_bytes(["Cut short."])[:300], "letter.docx").code == "invalid_file"


# --- Formats and bounds ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "filename", "content_type"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00", "photo.png", "image/png"),
        (b"\x00\x01\x02", "blob", "application/octet-stream"),
        (b"col1,col2", "table.xlsx", ""),
    ],
)
def test_a_format_that_is_not_read_is_unsupported(data, filename, content_type):
    failure = _failure(data, filename, content_type)
    assert failure.code == "unsupported_file"
    assert "PDF and DOCX" in failure.message


def test_a_text_or_html_file_larger_than_the_text_bound_fails():
    assert _failure(b"x" * 1001, "big.txt", limits=_limits(text_bytes_max=1000)).code == "invalid_file"
    assert _text(b"x" * 1000, "fits.txt", limits=_limits(text_bytes_max=1000)) == "x" * 1000
    page = b"<p>" + b"y" * 2000 + b"</p>"
    assert _failure(page, "big.html", limits=_limits(text_bytes_max=1000)).code == "invalid_file"


def test_cleaned_text_has_no_nul_control_characters_or_lone_surrogates():
    from apps.knowledge.extraction import text_clean

    assert text_clean("a\x00b\x1bc\r\nd\re\tf\ud800g") == "abc\nd\ne\tf?g"
