"""Parsing the corpus in tests/data/files (made by make_files.py): every phrase a document
holds comes back whole, and what cannot be read is refused with its reason."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from kelpie_trio.files.kinds import kind_for
from kelpie_trio.files.parse import ParseError, parse

FILES = Path(__file__).resolve().parents[1] / "data" / "files"
EXPECTED = json.loads((FILES / "expected.json").read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_document_gives_back_its_phrases_whole(name: str) -> None:
    text = parse((FILES / name).read_bytes(), kind_for(None, name))
    flat = " ".join(text.split())
    for phrase in EXPECTED[name]:
        assert phrase in flat, (name, phrase)


def test_html_keeps_the_article_and_drops_menus_scripts_and_footer() -> None:
    text = parse((FILES / "notice.html").read_bytes(), kind_for("text/html", "notice.html"))
    assert "Contact" not in text and "tracking" not in text and "All rights reserved" not in text


def test_a_corrupt_pdf_is_refused_with_its_reason() -> None:
    with pytest.raises(ParseError, match="the PDF is corrupt or unreadable"):
        parse((FILES / "corrupt.pdf").read_bytes(), kind_for(None, "corrupt.pdf"))


def test_a_zip_bomb_docx_is_refused_before_it_inflates() -> None:
    with pytest.raises(ParseError, match="zip bomb"):
        parse((FILES / "bomb.docx").read_bytes(), kind_for(None, "bomb.docx"))


def test_a_docx_that_is_not_an_archive_is_refused() -> None:
    with pytest.raises(ParseError, match="not a ZIP archive"):
        parse(b"plain words", kind_for(None, "x.docx"))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("word/document.xml", "<not-a-document/>")
    with pytest.raises(ParseError, match="the DOCX is corrupt or unreadable"):
        parse(out.getvalue(), kind_for(None, "x.docx"))


def test_empty_and_blank_files_are_refused() -> None:
    with pytest.raises(ParseError, match="the file is empty"):
        parse(b"", kind_for(None, "a.txt"))
    with pytest.raises(ParseError, match="the file has no text"):
        parse(b" \n\t\n", kind_for(None, "a.txt"))


def test_text_that_is_not_utf8_is_still_read() -> None:
    assert parse(b"caf\xe9 au lait", kind_for(None, "a.txt")) == "café au lait"
    assert parse(b"\xef\xbb\xbfhello", kind_for(None, "a.txt")) == "hello"


def _pdf_of_blank_page(password: str | None = None) -> bytes:
    import pypdf

    writer = pypdf.PdfWriter()
    writer.add_blank_page(width=200, height=200)
    if password is not None:
        writer.encrypt(password)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_a_pdf_without_text_or_with_a_password_is_refused() -> None:
    with pytest.raises(ParseError, match="no text layer"):
        parse(_pdf_of_blank_page(), kind_for(None, "scan.pdf"))
    with pytest.raises(ParseError, match="encrypted"):
        parse(_pdf_of_blank_page("secret"), kind_for(None, "locked.pdf"))
