"""Writes the small corpus of documents the file tests and the parser choice use.

`python -m tests.data.files.make_files` rewrites them; they are committed, so tests do
not depend on the generators. Each document carries facts a test can look for, in the
forms real documents take: a PDF set by matplotlib (TrueType text, two pages), a PDF
written the way TeX writes one (words placed by kerning offsets, no space characters,
two columns), a Word document with headings, a list and a table, and an HTML page with
navigation and a footer around its article. `expected.json` says, per document, the
phrases a good parser must give back whole.
"""

from __future__ import annotations

import datetime
import io
import json
import zipfile
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent

FACTS = {
    "handbook.md": [
        "The kelp farm opens at dawn",
        "Otters guard the longlines at night",
        "Life vests are mandatory beyond the breakwater",
    ],
    "operations.pdf": [
        "Harvest crews rotate every Thursday",
        "The drying racks hold 400 kilograms",
        "Report torn nets to the harbor master",
    ],
    "tides.pdf": [
        "Spring tides expose the lower longlines",
        "Neap tides keep the nursery lines submerged",
        "Divers check anchors after every storm",
    ],
    "minutes.docx": [
        "The cooperative approved a second boat",
        "Ines Alvarez will order the replacement floats",
        "Budget for floats",
    ],
    "notice.html": [
        "The harbor closes for dredging on 3 March",
        "Moorings on the east pier move to the fuel dock",
    ],
}


def markdown() -> bytes:
    return b"""# Kelp Farm Handbook

## Daily work

The kelp farm opens at dawn. Crews meet at the boat shed and check the weather board.
Otters guard the longlines at night. Nobody feeds them!

## Safety

- Life vests are mandatory beyond the breakwater.
- Never work the longlines alone.
- Radio channel 16 stays open at all times.

```
shed code: 4417
```
"""


def html() -> bytes:
    return b"""<!doctype html><html><head><title>Harbor notice</title>
<style>body{font-family:sans-serif}</style><script>var tracking = 1;</script></head>
<body><nav><a href="/">Home</a> | <a href="/news">News</a> | <a href="/contact">Contact</a></nav>
<article><h1>Harbor notice</h1>
<p>The harbor closes for dredging on 3 March. Work runs for two weeks, weather permitting.</p>
<p>Moorings on the east pier move to the fuel dock until the work is done. Skippers who
cannot move should call the harbor office before 1 March.</p></article>
<footer>Copyright Harbor Cooperative. All rights reserved. Privacy | Terms</footer>
</body></html>"""


def matplotlib_pdf() -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["pdf.fonttype"] = 42  # TrueType text, as office suites write it
    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.figure import Figure

    pages = [
        ["Operations Report", "", "Harvest crews rotate every Thursday.",
         "The drying racks hold 400 kilograms.", "Each crew logs its harvest by noon."],
        ["Maintenance", "", "Report torn nets to the harbor master.",
         "Engines are serviced every 200 hours."],
    ]  # fmt: skip
    out = io.BytesIO()
    with PdfPages(out, metadata={"CreationDate": None, "ModDate": None}) as pdf:
        for lines in pages:
            fig = Figure(figsize=(8.27, 11.69))
            for i, line in enumerate(lines):
                fig.text(0.1, 0.9 - i * 0.04, line, fontsize=18 if i == 0 else 11)
            pdf.savefig(fig)
    return out.getvalue()


def _pdf(objects: list[bytes]) -> bytes:
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref))  # fmt: skip
    return out.getvalue()


def _tj(words: list[str]) -> bytes:
    # Words as TeX sets them: one TJ array, the gaps between words as kerning offsets.
    parts = b" -333 ".join(b"(" + w.encode() + b")" for w in words)
    return b"[" + parts + b"] TJ"


def tex_like_pdf() -> bytes:
    left = ["Tide Notes", "Spring tides expose the lower longlines.",
            "Crews harvest the exposed fronds first."]  # fmt: skip
    right = ["Neap tides keep the nursery lines submerged.",
             "Divers check anchors after every storm."]  # fmt: skip
    ops = [b"BT /F1 11 Tf 14 TL"]
    for x, column in ((72, left), (320, right)):
        ops.append(b"1 0 0 1 %d 720 Tm" % x)
        for line in column:
            ops.append(_tj(line.split(" ")) + b" T*")
    ops.append(b"ET")
    stream = zlib.compress(b"\n".join(ops))
    return _pdf([
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream
        + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Times-Roman /Encoding /WinAnsiEncoding >>",
    ])  # fmt: skip


def docx() -> bytes:
    import docx as python_docx

    document = python_docx.Document()
    document.core_properties.created = datetime.datetime(2026, 1, 1)
    document.add_heading("Cooperative meeting minutes", level=1)
    document.add_paragraph("The cooperative approved a second boat for the outer farm.")
    document.add_heading("Actions", level=2)
    document.add_paragraph("Ines Alvarez will order the replacement floats.", style="List Bullet")
    document.add_paragraph("Tomas checks the winch before Friday.", style="List Bullet")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text = "Item"
    table.cell(0, 1).text = "Amount"
    table.cell(1, 0).text = "Budget for floats"
    table.cell(1, 1).text = "1,200 EUR"
    out = io.BytesIO()
    document.save(out)
    return _stable_zip(out.getvalue())


def _stable_zip(data: bytes) -> bytes:
    """The same archive with fixed member times, so regenerating changes no byte."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            fixed = zipfile.ZipInfo(info.filename, date_time=(2026, 1, 1, 0, 0, 0))
            fixed.compress_type = zipfile.ZIP_DEFLATED
            target.writestr(fixed, source.read(info.filename))
    return out.getvalue()


def zip_bomb_docx() -> bytes:
    """A .docx whose document part inflates to 40 MB from 40 kB."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr("[Content_Types].xml", b"<Types/>")
        member = zipfile.ZipInfo("word/document.xml", date_time=(2026, 1, 1, 0, 0, 0))
        member.compress_type = zipfile.ZIP_DEFLATED
        with z.open(member, "w") as sink:
            block = b"\0" * (1 << 20)
            for _ in range(40):
                sink.write(block)
    return out.getvalue()


def main() -> None:
    files = {
        "handbook.md": markdown(),
        "notice.html": html(),
        "operations.pdf": matplotlib_pdf(),
        "tides.pdf": tex_like_pdf(),
        "minutes.docx": docx(),
        "bomb.docx": zip_bomb_docx(),
        "corrupt.pdf": tex_like_pdf()[:300],
    }
    for name, data in files.items():
        (HERE / name).write_bytes(data)
    (HERE / "expected.json").write_text(json.dumps(FACTS, indent=2) + "\n")


if __name__ == "__main__":
    main()
