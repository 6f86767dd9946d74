"""Documents (HTML, Markdown, PDF, DOCX, text) become chunked text records with their source."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from tuneforge.config.schema import DataConfig
from tuneforge.data.chunking import approx_tokens, chunk_document, sentences
from tuneforge.data.documents import (
    Block,
    Document,
    DocumentError,
    Section,
    document_records,
    read_document,
)
from tuneforge.data.prepare import prepare_data, read_split
from tuneforge.data.readers import DatasetStream, read_dataset
from tuneforge.data.sources import dataset_files
from tuneforge.errors import DataError

PAGE = """<!doctype html><html><head><title>Widget Manual | ACME</title>
<style>body { color: red }</style><script>var note = "script text must go";</script></head>
<body>
<header><a href="/">ACME home</a> <a href="/shop">Shop</a></header>
<nav><ul><li><a href="/a">Products</a></li><li><a href="/b">About us</a></li></ul></nav>
<div><a href="/p">Privacy</a> | <a href="/t">Terms of service</a> | <a href="/c">Cookies</a></div>
<article>
<header><h1>Widget Manual</h1></header>
<p>The widget sorts parcels by weight. It runs on any recent computer.</p>
<h2>Installation</h2>
<p>Download the installer from the <a href="/dl">downloads page</a>. Run it once.</p>
<h3>Linux</h3>
<ul><li>Unpack the archive.</li><li>Run the setup script.</li></ul>
<table><tr><th>System</th><th>Version</th></tr><tr><td>Ubuntu</td><td>24.04</td></tr></table>
<aside>Sponsored: buy three widgets today!</aside>
<form><label>Subscribe to our newsletter</label></form>
</article>
<footer><p>Copyright ACME, all rights reserved.</p></footer>
</body></html>
"""

MARKDOWN = """# Field Guide

Welcome to the guide.

## Setup

Install the tools. Then check the version.

```python
def main():

    print("Keep. This. Whole.")
```

- first item
- second item

Troubleshooting
---------------

Restart the service when it hangs.
"""


def pdf_bytes(
    pages: list[list[str]], title: str = "", outline: list[tuple[str, int]] = ()
) -> bytes:
    """A minimal valid PDF: Helvetica text lines per page, an optional title and bookmarks."""
    count = len(pages)
    font, first_page = 3, 4  # object numbers: catalog 1, pages 2, font 3, then page/content pairs
    info, outlines = first_page + 2 * count, first_page + 2 * count + 1
    objects = {
        1: f"<< /Type /Catalog /Pages 2 0 R{f' /Outlines {outlines} 0 R' if outline else ''} >>",
        2: "<< /Type /Pages /Kids [{}] /Count {} >>".format(
            " ".join(f"{first_page + 2 * i} 0 R" for i in range(count)), count
        ),
        font: "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        info: f"<< /Title ({title}) >>",
    }
    for i, lines in enumerate(pages):
        page, content = first_page + 2 * i, first_page + 2 * i + 1
        shown = " T* ".join(f"({escape_pdf(line)}) Tj" for line in lines)
        stream = f"BT /F1 12 Tf 14 TL 72 720 Td {shown} ET"
        objects[page] = (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {content} 0 R "
            f"/Resources << /Font << /F1 {font} 0 R >> >> >>"
        )
        objects[content] = f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream"
    if outline:
        items = [outlines + 1 + k for k in range(len(outline))]
        objects[outlines] = f"<< /Type /Outlines /First {items[0]} 0 R /Last {items[-1]} 0 R >>"
        for k, (heading, page_index) in enumerate(outline):
            links = f" /Prev {items[k - 1]} 0 R" if k else ""
            links += f" /Next {items[k + 1]} 0 R" if k + 1 < len(items) else ""
            objects[items[k]] = (
                f"<< /Title ({heading}) /Parent {outlines} 0 R /Dest "
                f"[{first_page + 2 * page_index} 0 R /XYZ 0 792 0]{links} >>"
            )
    out, offsets = bytearray(b"%PDF-1.4\n"), {}
    for number in sorted(objects):
        offsets[number] = len(out)
        out += f"{number} 0 obj\n{objects[number]}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offsets[n]:010d} 00000 n \n".encode() for n in sorted(objects))
    trailer = f"<< /Size {len(objects) + 1} /Root 1 0 R /Info {info} 0 R >>"
    out += f"trailer\n{trailer}\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def escape_pdf(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def write_docx(path: Path) -> Path:
    import docx

    document = docx.Document()
    document.add_heading("Pump Handbook", 0)
    document.add_heading("Maintenance", 1)
    document.add_paragraph("Check the seals every month. Replace worn seals at once.")
    document.add_heading("Tools", 2)
    document.add_paragraph("a torque wrench", style="List Bullet")
    document.add_paragraph("spare seals", style="List Bullet")
    table = document.add_table(rows=2, cols=2)
    for row, cells in zip(table.rows, [("Part", "Interval"), ("Seal", "30 days")], strict=True):
        for cell, text in zip(row.cells, cells, strict=True):
            cell.text = text
    document.add_heading("Safety", 1)
    document.add_paragraph("Switch the pump off before opening it.")
    document.save(str(path))
    return path


def prose(n: int, topic: str = "parcel") -> str:
    """``n`` distinct sentences of seven words each."""
    return " ".join(f"Sentence {i} explains the {topic} sorter in detail." for i in range(n))


# -- reading each type ---------------------------------------------------------------------------


def test_html_loses_its_boilerplate_and_keeps_headings_lists_and_tables(tmp_path: Path) -> None:
    path = tmp_path / "manual.html"
    path.write_text(PAGE)
    document = read_document(path)
    text = "\n".join(block.text for section in document.sections for block in section.blocks)
    for gone in ("ACME home", "Products", "Privacy", "script text", "Sponsored", "Subscribe"):
        assert gone not in text
    assert "Copyright" not in text and "color" not in text
    assert document.title == "Widget Manual" and document.doc_type == "html"
    assert [s.path for s in document.sections] == [
        ("Widget Manual",),
        ("Widget Manual", "Installation"),
        ("Widget Manual", "Installation", "Linux"),
    ]
    linux = [block.text for block in document.sections[2].blocks]
    assert linux == [
        "- Unpack the archive.\n- Run the setup script.",
        "System | Version\nUbuntu | 24.04",
    ]
    assert "downloads page" in document.sections[1].blocks[0].text  # a link inside prose stays


def test_link_dense_blocks_go_and_a_page_without_article_keeps_its_body(tmp_path: Path) -> None:
    path = tmp_path / "plain.htm"
    path.write_text(
        "<html><body><h1>Notes</h1><p>Plain paragraph with <a href='/x'>one link</a> in it.</p>"
        "<p><a href='/1'>Tag one</a>, <a href='/2'>tag two</a>, <a href='/3'>tag three</a></p>"
        "<div hidden>Hidden text</div></body></html>"
    )
    document = read_document(path)
    assert [b.text for s in document.sections for b in s.blocks] == [
        "Plain paragraph with one link in it."
    ]


def test_an_html_page_in_its_declared_charset_is_decoded_with_it(tmp_path: Path) -> None:
    path = tmp_path / "old.html"
    page = '<html><head><meta charset="iso-8859-1"></head><body><p>Café au lait.</p></body></html>'
    path.write_bytes(page.encode("latin-1"))
    assert read_document(path).sections[0].blocks == [Block("Café au lait.")]


def test_markdown_headings_code_blocks_and_lists(tmp_path: Path) -> None:
    path = tmp_path / "guide.md"
    path.write_text(MARKDOWN)
    document = read_document(path)
    assert document.title == "Field Guide"
    assert [s.path for s in document.sections] == [
        ("Field Guide",),
        ("Field Guide", "Setup"),
        ("Field Guide", "Troubleshooting"),
    ]
    setup = document.sections[1].blocks
    assert setup[1] == Block('```python\ndef main():\n\n    print("Keep. This. Whole.")\n```', True)
    assert setup[2].text == "- first item\n- second item"
    chunks = chunk_document(document)
    assert '```python\ndef main():\n\n    print("Keep. This. Whole.")\n```' in chunks[1].text


def test_docx_heading_styles_become_the_section_path(tmp_path: Path) -> None:
    document = read_document(write_docx(tmp_path / "pump.docx"))
    assert document.title == "Pump Handbook" and document.doc_type == "docx"
    assert [(s.path, [b.text for b in s.blocks]) for s in document.sections] == [
        (("Maintenance",), ["Check the seals every month. Replace worn seals at once."]),
        (
            ("Maintenance", "Tools"),
            ["- a torque wrench\n- spare seals", "Part | Interval\nSeal | 30 days"],
        ),
        (("Safety",), ["Switch the pump off before opening it."]),
    ]


def test_pdf_text_layer_with_title_bookmarks_and_running_lines(tmp_path: Path) -> None:
    pages = [
        [
            "ACME confidential",
            "The sorter weighs each parcel. It logs the weigh-",
            "ings daily.",
            "1",
        ],
        ["ACME confidential", "Clean the belt weekly with a dry cloth.", "2"],
        ["ACME confidential", "Call support when the belt slips.", "3"],
    ]
    path = tmp_path / "sorter.pdf"
    path.write_bytes(pdf_bytes(pages, "Sorter Guide", [("Operation", 0), ("Care", 1)]))
    document = read_document(path)
    assert document.title == "Sorter Guide" and document.doc_type == "pdf"
    assert [(s.path, [b.text for b in s.blocks]) for s in document.sections] == [
        (("Operation",), ["The sorter weighs each parcel. It logs the weighings daily."]),
        (
            ("Care",),
            ["Clean the belt weekly with a dry cloth.", "Call support when the belt slips."],
        ),
    ]


def test_numbered_footers_and_a_bookmark_title_on_its_page_are_dropped(tmp_path: Path) -> None:
    pages = [
        ["Operation", "The sorter weighs each parcel.", "ACME sorter rev 2 - Page 1 of 3"],
        ["Care", "Clean the belt weekly.", "ACME sorter rev 2 - Page 2 of 3"],
        ["Call support when the belt slips.", "Operation manuals ship in 12 languages.", "- 3 -"],
    ]
    path = tmp_path / "sorter.pdf"
    path.write_bytes(pdf_bytes(pages, "Sorter Guide", [("Operation", 0), ("Care", 1)]))
    assert [(s.path, [b.text for b in s.blocks]) for s in read_document(path).sections] == [
        (("Operation",), ["The sorter weighs each parcel."]),
        (
            ("Care",),
            [
                "Clean the belt weekly.",
                # a heading word inside prose stays, and so does a line with a number in it
                "Call support when the belt slips. Operation manuals ship in 12 languages.",
            ],
        ),
    ]


def test_plain_text_paragraphs_are_unwrapped(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("First paragraph\nwraps here.\n\n- a list\n- stays\n")
    document = read_document(path)
    assert document.title == "notes"
    assert [b.text for b in document.sections[0].blocks] == [
        "First paragraph wraps here.",
        "- a list\n- stays",
    ]


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("broken.pdf", b"%PDF-1.4\nthis is not a pdf at all", "unreadable PDF"),
        ("scan.pdf", pdf_bytes([[]]), "no text layer (a scanned PDF?); OCR it first"),
        ("broken.docx", b"PK\x03\x04 not a zip archive", "unreadable DOCX"),
        ("latin.md", b"caf\xe9", "invalid UTF-8: byte 0xe9 at byte 4"),
        ("chrome.html", b"<nav>only a menu</nav>", "no text left after boilerplate removal"),
    ],
)
def test_unreadable_documents_name_the_file_and_the_reason(
    tmp_path: Path, name: str, data: bytes, reason: str
) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(DocumentError, match=rf"^{path}: ") as caught:
        read_document(path)
    assert caught.value.reason.startswith(reason)
    (record,) = document_records(path, name)
    assert (record.source, str(record.value)) == (f"{name}:1", caught.value.reason)


def test_an_encrypted_pdf_is_refused_with_what_to_do(tmp_path: Path) -> None:
    from pypdf import PdfReader, PdfWriter

    plain = tmp_path / "plain.pdf"
    plain.write_bytes(pdf_bytes([["Secret parcel routes."]]))
    writer = PdfWriter(clone_from=PdfReader(plain))
    writer.encrypt(user_password="letmein", algorithm="RC4-128")
    locked = tmp_path / "locked.pdf"
    with open(locked, "wb") as handle:
        writer.write(handle)
    with pytest.raises(DocumentError, match="encrypted PDF; remove its password"):
        read_document(locked)


# -- chunking ------------------------------------------------------------------------------------


def test_sentences_respect_abbreviations_initials_and_quotes() -> None:
    line = 'Use e.g. the CLI. Dr. Lee agreed. "Stop!" J. Smith said. Version 2.0 is out.'
    assert sentences(line) == [
        "Use e.g. the CLI.",
        "Dr. Lee agreed.",
        '"Stop!"',
        "J. Smith said.",
        "Version 2.0 is out.",
    ]
    assert sentences("今天好。明天见！") == ["今天好。", "明天见！"]


def test_approx_tokens_counts_words_and_cjk_characters() -> None:
    assert approx_tokens("ten words " * 5) == 13  # 10 words * 1.3
    assert approx_tokens("日本語 text") == 3 + 2


def test_chunks_fit_the_budget_carry_their_path_and_overlap() -> None:
    doc = Document(
        "Manual",
        "text",
        [Section(("Manual", "Install", "Linux"), [Block(prose(40)), Block(prose(30, "belt"))])],
    )
    chunks = chunk_document(doc, max_tokens=100, overlap_tokens=20)
    assert len(chunks) >= 5
    for chunk in chunks:
        assert chunk.tokens == approx_tokens(chunk.text) <= 100
        assert chunk.text.startswith("Manual > Install > Linux\n\n")
        assert chunk.section == "Manual > Install > Linux"
    bodies = [chunk.text.split("\n\n", 1)[1] for chunk in chunks]
    for before, after in itertools.pairwise(bodies):
        last = sentences(before.split("\n")[-1])[-1]
        assert after.startswith(last), (before, after)  # the previous chunk's last sentence
        assert approx_tokens(last) <= 20
    # Every sentence is in some chunk whole: nothing was cut inside one.
    joined = "\n".join(bodies)
    assert all(s in joined for s in sentences(prose(40)) + sentences(prose(30, "belt")))


def test_a_block_that_fits_starts_a_new_chunk_and_sections_never_share_one() -> None:
    doc = Document(
        "Guide",
        "markdown",
        [
            Section(("Guide", "A"), [Block(prose(8)), Block(prose(8, "belt"))]),
            Section(("Guide", "B"), [Block("Short.")]),
        ],
    )
    chunks = chunk_document(doc, max_tokens=90, overlap_tokens=0)
    assert [c.text for c in chunks] == [
        f"Guide > A\n\n{prose(8)}",
        f"Guide > A\n\n{prose(8, 'belt')}",
        "Guide > B\n\nShort.",
    ]


def test_an_over_long_sentence_is_cut_between_words_and_a_word_between_characters() -> None:
    long_sentence = " ".join(f"w{i}" for i in range(300))
    doc = Document("T", "text", [Section((), [Block(long_sentence), Block("x" * 2000)])])
    chunks = chunk_document(doc, 64, 8, count_tokens=len)  # one token per character
    assert all(chunk.tokens <= 64 for chunk in chunks)
    assert "".join(c.text.removeprefix("T\n\n") for c in chunks).count("x") >= 2000


def test_bad_budgets_are_refused() -> None:
    doc = Document("T", "text", [Section((), [Block("x")])])
    with pytest.raises(DataError, match="overlap_tokens 64 between 0 and half"):
        chunk_document(doc, max_tokens=100, overlap_tokens=64)


# -- through the data layer ----------------------------------------------------------------------


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """One document of each type, a nested folder, a corrupt PDF and a line-per-record .txt."""
    folder = tmp_path / "docs"
    (folder / "guides").mkdir(parents=True)
    (folder / "manual.html").write_text(PAGE)
    (folder / "guides" / "guide.md").write_text(MARKDOWN)
    write_docx(folder / "pump.docx")
    pages = [["Sorter Guide", prose(6)], ["Write to ops.lead@example.com for spare belts."]]
    (folder / "sorter.pdf").write_bytes(pdf_bytes(pages, "Sorter Guide"))
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4\ngarbage")
    (folder / "lines.txt").write_text("One record per line.\nAnother record.\n")
    return folder


def test_a_folder_of_documents_reads_as_text_records_with_their_metadata(corpus: Path) -> None:
    result = read_dataset(corpus, "text")
    expected = {"manual.html": 3, "guides/guide.md": 3, "pump.docx": 3, "sorter.pdf": 1}
    books = result.books()
    assert books["files"] == {
        "broken.pdf": {"read": 1, "samples": 0, "quarantined": 1},
        "guides/guide.md": {"read": 3, "samples": 3, "quarantined": 0},
        "lines.txt": {"read": 2, "samples": 2, "quarantined": 0},  # .txt: one record per line
        "manual.html": {"read": 3, "samples": 3, "quarantined": 0},
        "pump.docx": {"read": 3, "samples": 3, "quarantined": 0},
        "sorter.pdf": {"read": 1, "samples": 1, "quarantined": 0},
    }
    assert (
        books["read"] == len(result.samples) + len(result.quarantined) == sum(expected.values()) + 3
    )
    assert result.kinds() == {"text": sum(expected.values()) + 2}
    (bad,) = result.quarantined
    assert bad.source == "broken.pdf:1" and bad.reason.startswith("unreadable PDF")
    documents = [s for s in result.samples if not s.source.startswith("lines.txt")]
    assert [s.id for s in documents][:3] == [
        "guides/guide.md#1",
        "guides/guide.md#2",
        "guides/guide.md#3",
    ]
    assert documents[1].source == "guides/guide.md:2"
    assert documents[1].text.startswith("Field Guide > Setup\n\n")


def test_chunk_records_carry_the_metadata(corpus: Path) -> None:
    records = list(document_records(corpus / "pump.docx", "pump.docx"))
    assert [r.value["meta"] for r in records] == [
        {
            "source_file": "pump.docx",
            "doc_title": "Pump Handbook",
            "section": section,
            "chunk": n,
            "chunks": 3,
            "doc_type": "docx",
        }
        for n, section in enumerate(["Maintenance", "Maintenance > Tools", "Safety"], 1)
    ]
    assert [r.value["id"] for r in records] == ["pump.docx#1", "pump.docx#2", "pump.docx#3"]
    types = {"manual.html": "html", "guides/guide.md": "markdown", "sorter.pdf": "pdf"}
    for name, doc_type in types.items():
        records = list(document_records(corpus / name, name))
        for n, record in enumerate(records, 1):
            meta = record.value["meta"]
            assert (meta["source_file"], meta["doc_type"]) == (name, doc_type)
            assert (meta["chunk"], meta["chunks"]) == (n, len(records))
            assert record.value["text"].startswith(meta["doc_title"])  # the heading line


def test_the_stream_balances_the_books_and_honours_the_budget(corpus: Path) -> None:
    stream = DatasetStream(corpus, "auto")
    samples = list(stream)
    assert stream.read == len(samples) + sum(stream.reasons.values()) == 13
    assert all(approx_tokens(s.text) <= 512 for s in samples)


def test_documents_beside_record_files_are_notes_and_skipped(tmp_path: Path) -> None:
    (tmp_path / "data.jsonl").write_text(json.dumps({"text": "a record"}) + "\n")
    (tmp_path / "README.md").write_text("# Dataset card\n\nAbout this data.\n")
    files, skipped = dataset_files(tmp_path)
    assert [f.name for f in files] == ["data.jsonl"] and skipped == ["README.md"]
    files, skipped = dataset_files(tmp_path, documents=True)
    assert [f.name for f in files] == ["README.md", "data.jsonl"] and skipped == []
    assert [f.kind for f in dataset_files(tmp_path / "README.md")[0]] == ["document"]
    (tmp_path / "page.html.gz").write_bytes(b"")
    assert "page.html.gz" in dataset_files(tmp_path, documents=True)[1]


def test_prepare_pretrains_on_a_documents_folder_with_pii_redacted(
    corpus: Path, chat_tokenizer, tmp_path: Path
) -> None:
    config = DataConfig(
        path=str(corpus), format="text", max_length=256, val_fraction=0.0, test_fraction=0.0
    )
    out = tmp_path / "prepared"
    books = prepare_data(config, chat_tokenizer, seed=0, out_dir=out, objective="pretrain")
    assert books["read"] == 13 and books["quarantined"] == 1
    assert books["read"] == books["kept"] + sum(books["dropped"].values()) + books["quarantined"]
    assert books["kept"] == 12 and books["dropped"] == {}
    rows = read_split(out, "train")
    texts = [r["text"] for r in rows]
    assert not any("ops.lead@example.com" in t for t in texts)
    assert any("Write to <EMAIL> for spare belts." in t for t in texts)
    assert {r["id"] for r in rows} >= {"sorter.pdf#1", "pump.docx#3"}
    quarantined = (out / "quarantine.jsonl").read_text().splitlines()
    assert [json.loads(line)["source"] for line in quarantined] == ["broken.pdf:1"]
