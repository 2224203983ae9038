"""Bytes of an uploaded file to its text, with maintained libraries, or a clear refusal.

- plain text, Markdown, code, JSON...: decoded as UTF-8 (a BOM dropped; bytes that are
  not UTF-8 read as Latin-1 rather than refused: such files exist and stay readable);
- HTML: trafilatura (already used by fetch_webpage): the article, without menus,
  footers and scripts;
- PDF: pypdf (BSD, pure Python, bounded decompression). On this repository's corpus
  (tests/data/files) pypdf and pdfminer.six gave back every test phrase whole, TeX-style
  kerned words included; pypdf won on having no dependencies, being faster on the
  larger document and refusing decompression bombs by itself;
- DOCX: python-docx (MIT), body paragraphs and tables in document order. The archive is
  checked first: a member that inflates past `MAX_INFLATED` or by more than
  `MAX_RATIO` times (a zip bomb) is refused before python-docx opens it.

Every refusal is a `ParseError` whose message becomes the file's `error_message`.
Parsing is CPU work on untrusted input: the worker runs it off the trio thread with a
time limit (service/file_worker.py); nothing here does I/O.
"""

from __future__ import annotations

import io
import zipfile

from kelpie_trio.files.kinds import FileKind

__all__ = ["MAX_INFLATED", "MAX_TEXT_CHARS", "ParseError", "parse"]

MAX_INFLATED = 64 * 1024 * 1024  # bytes a DOCX may inflate to, all members together
MAX_RATIO = 200  # a member inflating more than this from over 1 MB compressed is a bomb
MAX_TEXT_CHARS = 4_000_000  # the text kept (it is stored, in chunks, in one transaction)


class ParseError(ValueError):
    """Why a file's text cannot be had: its `error_message`."""


def _decode(data: bytes) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _html(data: bytes) -> str:
    import trafilatura  # heavy: loaded with the first HTML file

    html = _decode(data)
    text = trafilatura.extract(html, output_format="markdown", include_tables=True,
                               favor_recall=True)  # fmt: skip
    return text or trafilatura.html2txt(html) or ""


def _pdf(data: bytes) -> str:
    import pypdf
    from pypdf.errors import PyPdfError

    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise ParseError("the PDF is encrypted: upload it without a password")
        pages = [page.extract_text() or "" for page in reader.pages]
    except ParseError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError,
            OSError, RecursionError, zipfile.BadZipFile) as error:  # fmt: skip
        raise ParseError(
            f"the PDF is corrupt or unreadable ({type(error).__name__}: {error})"
        ) from None
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text:
        raise ParseError("the PDF has no text layer (a scanned document?): nothing to read")
    return text


def check_archive(data: bytes) -> None:
    """Refuse a ZIP container that would inflate too far, reading what it really
    inflates to (the sizes its directory declares may lie)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise ParseError("the DOCX is corrupt: not a ZIP archive") from None
    total = 0
    with archive:
        for info in archive.infolist():
            if info.file_size > MAX_INFLATED or (
                info.compress_size > 0 and info.file_size / info.compress_size > MAX_RATIO
                and info.file_size > 1 << 20
            ):  # fmt: skip
                raise ParseError(
                    f"the DOCX looks like a zip bomb: {info.filename} inflates to "
                    f"{info.file_size} bytes from {info.compress_size}"
                )
            try:
                with archive.open(info) as member:
                    while chunk := member.read(1 << 20):
                        total += len(chunk)
                        if total > MAX_INFLATED:
                            raise ParseError(
                                f"the DOCX looks like a zip bomb: it inflates past "
                                f"{MAX_INFLATED} bytes"
                            )
            except (zipfile.BadZipFile, OSError, EOFError) as error:
                raise ParseError(f"the DOCX is corrupt: {error}") from None


def _docx(data: bytes) -> str:
    check_archive(data)
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    try:
        document = docx.Document(io.BytesIO(data))
        lines: list[str] = []
        for item in document.iter_inner_content():
            if isinstance(item, Paragraph):
                lines.append(item.text)
            elif isinstance(item, Table):
                for row in item.rows:
                    lines.append(" | ".join(cell.text.strip() for cell in row.cells))
    except ParseError:
        raise
    except Exception as error:  # python-docx raises many kinds on a broken package
        raise ParseError(
            f"the DOCX is corrupt or unreadable ({type(error).__name__}: {error})"
        ) from None
    return "\n".join(lines)


def parse(data: bytes, kind: FileKind) -> str:
    """The file's text; ParseError when there is none to have."""
    if not data:
        raise ParseError("the file is empty")
    if kind.parser == "pdf":
        text = _pdf(data)
    elif kind.parser == "docx":
        text = _docx(data)
    elif kind.parser == "html":
        text = _html(data)
    else:
        text = _decode(data)
    text = text.replace("\x00", "")
    if not text.strip():
        raise ParseError("the file has no text")
    if len(text) > MAX_TEXT_CHARS:
        raise ParseError(
            f"the file's text is {len(text)} characters; a file may have at most {MAX_TEXT_CHARS}"
        )
    return text
