"""The kinds of file a folder takes: media type, how it is parsed, how its lines are cut.

Letta 0.16.8 accepts PDF, plain text, Markdown, JSON, CSV, HTML, code and configuration
files, judged by the upload's Content-Type, else by the file name's extension; anything
else is refused (415). DOCX is served here too (Letta 0.16.8's list of served kinds does
not have it; this server reads it with python-docx). The line strategy follows Letta's:
Markdown is read sentence by sentence, code keeps its indentation, everything else is one
stripped line per line of text.
"""

from __future__ import annotations

from typing import Literal

import attrs

__all__ = ["DOCX", "KINDS", "PDF", "FileKind", "kind_for", "stored_kind"]

Strategy = Literal["lines", "code", "sentences"]
Parser = Literal["text", "markdown", "html", "pdf", "docx"]

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


@attrs.frozen
class FileKind:
    media_type: str
    parser: Parser
    strategy: Strategy


_TEXT: list[tuple[str, str, Strategy]] = [
    (".txt", "text/plain", "lines"),
    (".md", "text/markdown", "sentences"),
    (".markdown", "text/markdown", "sentences"),
    (".json", "application/json", "lines"),
    (".jsonl", "application/jsonl", "lines"),
    (".csv", "text/csv", "lines"),
    (".xml", "application/xml", "lines"),
    (".yaml", "text/x-yaml", "lines"),
    (".yml", "text/x-yaml", "lines"),
    (".toml", "application/toml", "lines"),
    (".ini", "text/x-ini", "lines"),
    (".cfg", "text/x-conf", "lines"),
    (".conf", "text/x-conf", "lines"),
    (".css", "text/css", "lines"),
    (".py", "text/x-python", "code"),
    (".js", "text/javascript", "code"),
    (".ts", "text/x-typescript", "code"),
    (".java", "text/x-java-source", "code"),
    (".c", "text/x-c", "code"),
    (".h", "text/x-c", "code"),
    (".cpp", "text/x-c++", "code"),
    (".cs", "text/x-csharp", "code"),
    (".go", "text/x-go", "code"),
    (".rs", "text/x-rust", "code"),
    (".rb", "text/x-ruby", "code"),
    (".php", "text/x-php", "code"),
    (".sh", "text/x-shellscript", "code"),
    (".sql", "text/x-sql", "code"),
]

KINDS: dict[str, FileKind] = {}  # by extension
_BY_TYPE: dict[str, FileKind] = {}
for _ext, _type, _strategy in _TEXT:
    _kind = FileKind(_type, "markdown" if _type == "text/markdown" else "text", _strategy)
    KINDS[_ext] = _kind
    _BY_TYPE.setdefault(_type, _kind)
for _ext in (".html", ".htm"):
    KINDS[_ext] = _BY_TYPE["text/html"] = FileKind("text/html", "html", "lines")
KINDS[".pdf"] = _BY_TYPE[PDF] = FileKind(PDF, "pdf", "lines")
KINDS[".docx"] = _BY_TYPE[DOCX] = FileKind(DOCX, "docx", "lines")
_BY_TYPE["text/x-markdown"] = _BY_TYPE["text/markdown"]


def _extension(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot > 0 else ""


def kind_for(content_type: str | None, file_name: str) -> FileKind | None:
    """The kind of an upload: its Content-Type when that is one served (parameters such
    as charset dropped), else its name's extension; None when neither is."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media in _BY_TYPE:
        return _BY_TYPE[media]
    return KINDS.get(_extension(file_name))


def stored_kind(content_type: str | None, file_name: str) -> FileKind | None:
    """The kind an accepted upload is kept as: as Letta records `file_type`, its name's
    extension first (a Markdown file sent as text/plain is still read as Markdown), else
    its Content-Type."""
    return KINDS.get(_extension(file_name)) or kind_for(content_type, file_name)


def supported() -> str:
    """The served kinds in words, for the 415's detail."""
    return (
        "PDF, DOCX, HTML, Markdown, plain text, JSON, CSV and code files ("
        + ", ".join(sorted(KINDS))
        + ")"
    )
