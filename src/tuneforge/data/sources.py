"""Find a dataset's files and stream their records, marking the ones that cannot be parsed.

File types, by name: ``.jsonl`` / ``.ndjson``, ``.json`` (an array of records,
an object holding them, or JSON lines under a ``.json`` name), each optionally
``.gz``; ``.csv`` / ``.tsv`` (a header row, then one record per row);
``.parquet``; ``.txt`` (one text record per non-empty line, the line ending
removed; blank lines are not records, so paragraphs must be one line each, as
in LLaMA-Factory's text files); documents, ``.html`` / ``.htm``, ``.md`` /
``.markdown``, ``.pdf`` and ``.docx``, cut into chunks that become ``text``
records (:mod:`tuneforge.data.documents`); a directory saved by ``datasets``'
``save_to_disk``; or a directory of any of these, read in sorted order with
sub-directories, hidden files skipped and unknown files listed as skipped.

A directory that holds record files (JSON, JSONL, CSV, Parquet, ``datasets``)
is a dataset: its documents are its notes (a dataset card ``README.md``) and are
skipped, as any unknown file; a directory of documents and ``.txt`` files only is
a corpus, and its documents are read. ``dataset_files(documents=...)`` decides it
instead.

Every record's position is its line number for line formats (JSONL, CSV: the
line its row starts on, TXT) and its 1-based index for the others (JSON arrays
and objects, Parquet, ``datasets`` directories), and its chunk number for a
document. A record that cannot be parsed (invalid JSON or UTF-8, a CSV row of the
wrong width) is yielded with a :class:`BadRecord` in place of its value, so the
books still count it; so is a document that cannot be read (corrupt, encrypted,
without text), as one record at position 1.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tuneforge.data.chunking import MAX_TOKENS, OVERLAP_TOKENS
from tuneforge.data.messages import BadRecord
from tuneforge.errors import DataError

SUFFIXES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".txt": "txt",
    ".html": "document",
    ".htm": "document",
    ".md": "document",
    ".markdown": "document",
    ".pdf": "document",
    ".docx": "document",
}
RECORD_KINDS = frozenset({"jsonl", "json", "csv", "parquet", "datasets"})  # make a folder a dataset
_ESCAPED = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, kept by surrogateescape
_WS = re.compile(r"\s*")
_NEXT_VALUE = re.compile(r",\s*(?=[{\[])")


@dataclass
class RawRecord:
    """One record as it came out of a file: parsed value (or BadRecord) and where it was."""

    file: str
    position: int
    value: Any
    raw: str | None = None  # the original text when at hand; else the value is re-serialised

    @property
    def source(self) -> str:
        return f"{self.file}:{self.position}"

    def raw_text(self) -> str:
        """The record's text for the quarantine file (undecodable bytes shown as U+FFFD)."""
        if self.raw is None:
            return json.dumps(self.value, ensure_ascii=False, default=str)
        return self.raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


@dataclass
class DatasetFile:
    """A file (or ``datasets`` directory) of the dataset, its display name and its type."""

    name: str
    path: Path
    kind: str


def dataset_files(
    path: Path, *, documents: bool | None = None
) -> tuple[list[DatasetFile], list[str]]:
    """The readable files under ``path`` in reading order, and the names of those skipped.

    Args:
        path: A file, or a directory to walk.
        documents: Whether a directory's documents are read; None: unless it holds
            record files (see the module). A single document file is always read.

    Raises:
        DataError: the path is missing, or a single file of a type we cannot read.
    """
    if path.is_dir():
        if _is_saved_dataset(path):
            return [DatasetFile(path.name, path, "datasets")], []
        found: list[tuple[str, DatasetFile | None]] = []
        _walk(path, path, found)
        if documents is None:
            documents = not any(entry and entry.kind in RECORD_KINDS for _, entry in found)
        read = [e for _, e in found if e and (documents or e.kind != "document")]
        skipped = [name for name, e in found if not e or (not documents and e.kind == "document")]
        return read, skipped
    if not path.is_file():
        raise DataError(f"data.path {str(path)!r}: file not found")
    kind = file_kind(path)
    if kind is None:
        raise DataError(
            f"data.path {str(path)!r}: unknown file type; use .jsonl, .json, .csv, .tsv, "
            ".parquet or .txt (optionally .gz), a document (.html, .md, .pdf, .docx), or a "
            "directory"
        )
    return [DatasetFile(path.name, path, kind)], []


def file_kind(path: Path) -> str | None:
    """The reader for a file name, or None for a type we do not read."""
    name = path.name.lower().removesuffix(".gz")
    suffix = name[name.rfind(".") :] if "." in name else ""
    kind = SUFFIXES.get(suffix)
    if path.name.lower().endswith(".gz") and kind in ("parquet", "document"):
        return None  # Parquet compresses internally; documents are read in place
    return kind


def _walk(root: Path, folder: Path, found: list[tuple[str, DatasetFile | None]]) -> None:
    """Every file under ``folder``: its name and entry (None for a type we do not read)."""
    for entry in sorted(folder.iterdir()):
        name = entry.relative_to(root).as_posix()
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            if _is_saved_dataset(entry):
                found.append((name, DatasetFile(name, entry, "datasets")))
            else:
                _walk(root, entry, found)
        else:
            kind = file_kind(entry)
            found.append((name, DatasetFile(name, entry, kind) if kind else None))


def _is_saved_dataset(folder: Path) -> bool:
    markers = ("dataset_info.json", "state.json")
    return (folder / "dataset_dict.json").is_file() or all((folder / m).is_file() for m in markers)


def iter_records(
    entry: DatasetFile, *, max_tokens: int = MAX_TOKENS, overlap_tokens: int = OVERLAP_TOKENS
) -> Iterator[RawRecord]:
    """Stream the records of one dataset file (a document's: its chunks, of at most
    ``max_tokens`` approximate tokens overlapping by ``overlap_tokens``)."""
    if entry.kind == "document":
        from tuneforge.data.documents import document_records  # it builds on RawRecord

        yield from document_records(
            entry.path, entry.name, max_tokens=max_tokens, overlap_tokens=overlap_tokens
        )
    elif entry.kind == "parquet":
        yield from _parquet(entry)
    elif entry.kind == "datasets":
        yield from _saved_dataset(entry)
    elif entry.kind == "json":
        yield from _json(entry.name, _read_bytes(entry.path))
    else:
        with _open(entry.path) as handle:
            lines = _guard_stream(handle)
            if entry.kind == "jsonl":
                yield from _jsonl(entry.name, lines)
            elif entry.kind == "txt":
                yield from _txt(entry.name, lines)
            else:
                delimiter = "\t" if ".tsv" in entry.path.name.lower() else ","
                yield from _csv(entry.name, lines, delimiter)


def _open(path: Path) -> IO[bytes]:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def _read_bytes(path: Path) -> bytes:
    with _open(path) as handle:
        try:
            return handle.read()
        except (OSError, EOFError) as err:
            raise DataError(f"{path}: corrupt gzip stream ({err}); re-create the file") from None


def _guard_stream(handle: Iterable[bytes]) -> Iterator[bytes | BadRecord]:
    """Lines of a stream, BOM removed; a corrupt gzip stream ends with a BadRecord, so it counts."""
    try:
        for line_no, line in enumerate(handle):
            yield line if line_no else line.removeprefix(b"\xef\xbb\xbf")
    except (OSError, EOFError) as err:
        yield BadRecord(f"corrupt gzip stream ({err}); the rest of the file is lost")


def _decode(line: bytes) -> str | BadRecord:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as err:
        return BadRecord(f"invalid UTF-8: byte 0x{line[err.start]:02x} at byte {err.start + 1}")


def _decoded_lines(
    lines: Iterable[bytes | BadRecord],
) -> Iterator[tuple[int, str | BadRecord, str]]:
    """Non-blank lines: their number, decoded text (or why it is not text) and raw text."""
    for line_no, line in enumerate(lines, 1):
        if isinstance(line, BadRecord):
            yield line_no, line, ""
            continue
        line = line.rstrip(b"\r\n")
        if line.strip():
            yield line_no, _decode(line), line.decode("utf-8", "replace")


def _jsonl(name: str, lines: Iterable[bytes | BadRecord]) -> Iterator[RawRecord]:
    for line_no, text, raw in _decoded_lines(lines):
        if isinstance(text, BadRecord):
            yield RawRecord(name, line_no, text, raw)
            continue
        try:
            yield RawRecord(name, line_no, json.loads(text), raw)
        except json.JSONDecodeError as err:
            yield RawRecord(name, line_no, _invalid_json(err, lines=False), raw)


def _txt(name: str, lines: Iterable[bytes | BadRecord]) -> Iterator[RawRecord]:
    for line_no, text, raw in _decoded_lines(lines):
        value = text if isinstance(text, BadRecord) else {"text": text}
        yield RawRecord(name, line_no, value, raw)


def _csv(name: str, lines: Iterable[bytes | BadRecord], delimiter: str) -> Iterator[RawRecord]:
    """Rows as ``{header: cell}``; a record's position is the line its row starts on."""
    csv.field_size_limit(2**31 - 1)  # long documents in one cell are normal for training data
    consumed: list[str] = []  # the lines of the row being parsed, for the quarantine's raw text
    lost: list[BadRecord] = []

    def text_lines() -> Iterator[str]:
        for line in lines:
            if isinstance(line, BadRecord):
                lost.append(line)
                return
            consumed.append(line.decode("utf-8", "surrogateescape"))
            yield consumed[-1]

    reader = csv.reader(text_lines(), delimiter=delimiter)
    header: list[str] | None = None
    start = 1
    while True:
        try:
            row: list[str] | BadRecord = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            row = BadRecord(f"invalid CSV: {err}")
        line_no, start = start, reader.line_num + 1
        raw, consumed[:] = "".join(consumed).rstrip("\r\n"), []
        if isinstance(row, list) and not any(cell.strip() for cell in row):
            continue
        if header is None and isinstance(row, list):
            header = row
            continue
        yield RawRecord(name, line_no, _csv_value(row, header or []), raw)
    if lost:
        yield RawRecord(name, start, lost[0], "")


def _csv_value(row: list[str] | BadRecord, header: list[str]) -> dict[str, str] | BadRecord:
    if isinstance(row, BadRecord):
        return row
    if any(_ESCAPED.search(cell) for cell in row):
        return BadRecord("invalid UTF-8 in the row")
    if len(row) != len(header):
        return BadRecord(f"row has {len(row)} fields, the header has {len(header)}")
    return dict(zip(header, row, strict=True))


def _json(name: str, data: bytes) -> Iterator[RawRecord]:
    """A JSON array or object of records, or JSON lines under a ``.json`` name."""
    text = data.decode("utf-8", "surrogateescape").lstrip("\ufeff")
    start = _WS.match(text).end()  # type: ignore[union-attr]
    if start == len(text):
        return
    if text[start] == "[":
        yield from _json_array(name, text, start + 1)
        return
    first_line, _, rest = text[start:].partition("\n")
    if rest.strip() and _parses(first_line):
        yield from _jsonl(name, data.split(b"\n"))
        return
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        yield RawRecord(name, 1, _invalid_json(err), text)
        return
    if _ESCAPED.search(text):
        yield RawRecord(name, 1, BadRecord("invalid UTF-8 in the file"), text)
        return
    yield from _json_object(name, value)


def _invalid_json(err: json.JSONDecodeError, lines: bool = True) -> BadRecord:
    # The decoder's messages end in "at" ("Invalid control character at"); we say where.
    where = f"line {err.lineno} column {err.colno}" if lines else f"column {err.colno}"
    return BadRecord(f"invalid JSON: {err.msg.removesuffix(' at')} at {where}")


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def _json_object(name: str, value: Any) -> Iterator[RawRecord]:
    """Records held by a JSON object: ``{"data": [...]}``, ``{id: record, ...}``, or one record."""
    from tuneforge.data.formats import FIELDS

    if not isinstance(value, dict) or not value or value.keys() & set(FIELDS):
        yield RawRecord(name, 1, value)
    elif len(value) == 1 and isinstance(next(iter(value.values())), list):
        for index, record in enumerate(next(iter(value.values())), 1):
            yield RawRecord(name, index, record)
    elif all(isinstance(record, dict) for record in value.values()):
        for index, (key, record) in enumerate(value.items(), 1):
            yield RawRecord(name, index, {"id": key, **record})
    else:
        yield RawRecord(name, 1, value)


def _json_array(name: str, text: str, pos: int) -> Iterator[RawRecord]:
    """The elements of a JSON array, resynchronising after a broken one so only it is lost."""
    decoder = json.JSONDecoder()
    escaped = _ESCAPED.search(text) is not None
    index = 0
    while (pos := _WS.match(text, pos).end()) < len(text) and text[pos] != "]":  # type: ignore[union-attr]
        index += 1
        try:
            value, end = decoder.raw_decode(text, pos)
            after = _WS.match(text, end).end()  # type: ignore[union-attr]
            if after < len(text) and text[after] not in ",]":
                raise json.JSONDecodeError("Expecting ',' delimiter", text, after)
        except json.JSONDecodeError as err:
            end = _next_element(text, pos, decoder)
            raw = text[pos:end].rstrip().rstrip(",")
            yield RawRecord(name, index, _invalid_json(err), raw)
            pos = end
            continue
        if escaped and (bad := _ESCAPED.search(text, pos, end)):
            line_no = text.count("\n", 0, bad.start()) + 1
            reason = f"invalid UTF-8: byte 0x{ord(bad.group()) - 0xDC00:02x} at line {line_no}"
            yield RawRecord(name, index, BadRecord(reason), text[pos:end])
        else:
            yield RawRecord(name, index, value)
        pos = after + 1 if after < len(text) and text[after] == "," else after
    trailing = text[pos + 1 :].strip() if pos < len(text) else ""
    if trailing:
        yield RawRecord(name, index + 1, BadRecord("invalid JSON: data after the array"), trailing)


def _next_element(text: str, pos: int, decoder: json.JSONDecoder) -> int:
    """Where the array element after the broken one at ``pos`` starts (or where the array ends).

    Pretty-printed arrays put sibling records at the same indentation, which a
    damaged record cannot fake; in a one-line array the next ``, {`` that parses
    as a whole element is taken, so two adjacent damaged records there count as one.
    """
    line_start = text.rfind("\n", 0, pos) + 1
    indent = text[line_start:pos]
    if not indent.strip():
        sibling = re.compile("\n" + re.escape(indent) + "[{\\[]").search(text, pos + 1)
        if sibling:
            return sibling.end() - 1
    else:
        for match in _NEXT_VALUE.finditer(text, pos + 1):
            candidate = match.end()
            try:
                _, end = decoder.raw_decode(text, candidate)
            except json.JSONDecodeError:
                continue
            after = _WS.match(text, end).end()  # type: ignore[union-attr]
            if after >= len(text) or text[after] in ",]":
                return candidate
    closing = text.rstrip()
    return len(closing) - 1 if closing.endswith("]") and len(closing) - 1 > pos else len(text)


def _parquet(entry: DatasetFile) -> Iterator[RawRecord]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    index = 0
    try:
        for batch in pq.ParquetFile(entry.path).iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                index += 1
                yield RawRecord(entry.name, index, row)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{entry.path}: unreadable Parquet after row {index} ({err})") from None


def _saved_dataset(entry: DatasetFile) -> Iterator[RawRecord]:
    """Rows of a ``save_to_disk`` directory; a DatasetDict's splits are read in sorted order."""
    import datasets

    try:
        loaded = datasets.load_from_disk(str(entry.path))
    except (OSError, ValueError) as err:
        raise DataError(f"{entry.path}: not a readable datasets directory ({err})") from None
    if isinstance(loaded, datasets.DatasetDict):
        parts = [(f"{entry.name}/{split}", loaded[split]) for split in sorted(loaded)]
    else:
        parts = [(entry.name, loaded)]
    for name, dataset in parts:
        index = 0
        for batch in dataset.iter(batch_size=1024):
            for values in zip(*batch.values(), strict=True):
                index += 1
                yield RawRecord(name, index, dict(zip(batch.keys(), values, strict=True)))
