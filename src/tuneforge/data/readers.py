"""Read a dataset (file or directory, any supported type and format) into Samples.

Records that cannot become a Sample are quarantined with their source, the
reason and their raw text, and reading goes on; ``strict=True`` raises on the
first one instead. ``read`` counts records; a ranked record expands into
several samples, and ``expanded`` counts the samples beyond one per record. The
books always balance, for the whole dataset and for each file in it:
``read + expanded = samples + quarantined``. File types are described in
:mod:`tuneforge.data.sources`, record formats in :mod:`tuneforge.data.formats`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.data.chunking import MAX_TOKENS, OVERLAP_TOKENS
from tuneforge.data.formats import BadRecord, check_format, check_mapping, to_sample, to_samples
from tuneforge.data.sample import Sample
from tuneforge.data.sources import RawRecord, dataset_files, iter_records
from tuneforge.errors import DataError

SOURCE_KEY = "source_name"  # Sample.meta key naming a mixture's source

__all__ = [
    "SOURCE_KEY",
    "BadRecord",
    "DatasetStream",
    "FileBooks",
    "Quarantined",
    "ReadResult",
    "SourcesStream",
    "read_dataset",
    "to_sample",
    "to_samples",
]


@dataclass
class Quarantined:
    """A record that could not become a Sample, with why and where."""

    source: str
    reason: str
    raw: str

    def to_json(self) -> dict[str, str]:
        return {"source": self.source, "reason": self.reason, "raw": self.raw[:2000]}


@dataclass
class FileBooks:
    """How many records of one file became samples and how many were quarantined.

    ``expanded`` counts samples beyond one per record (ranked records), so
    ``read + expanded = samples + quarantined``; it is shown only when not zero.
    """

    samples: int = 0
    quarantined: int = 0
    expanded: int = 0

    @property
    def read(self) -> int:
        return self.samples - self.expanded + self.quarantined

    def to_json(self) -> dict[str, int]:
        books = {"read": self.read, "samples": self.samples, "quarantined": self.quarantined}
        return {**books, "expanded": self.expanded} if self.expanded else books


@dataclass
class ReadResult:
    """Samples and quarantined records: ``read + expanded = len(samples) + len(quarantined)``.

    Attributes:
        path: The file or directory read.
        samples: The records that became Samples, in reading order.
        quarantined: The records that did not, with the reason.
        files: Books per source file (its name as used in ``source``), in reading order.
        skipped: Files of a directory that are not of a readable type.
        expanded: Samples beyond one per record (ranked records expand).
    """

    path: Path
    samples: list[Sample] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    files: dict[str, FileBooks] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    expanded: int = 0

    @property
    def read(self) -> int:
        """Records read (a ranked record that expands counts once)."""
        return len(self.samples) - self.expanded + len(self.quarantined)

    def kinds(self) -> dict[str, int]:
        """Samples per kind (chat, preference, unpaired, text)."""
        return dict(Counter(sample.kind for sample in self.samples))

    def books(self) -> dict[str, Any]:
        """The counts for a manifest or summary, per file included."""
        return {
            "read": self.read,
            "expanded": self.expanded,
            "samples": len(self.samples),
            "quarantined": len(self.quarantined),
            "kinds": self.kinds(),
            "files": {name: books.to_json() for name, books in self.files.items()},
            "skipped": list(self.skipped),
        }


def read_dataset(
    path: str | Path,
    fmt: str = "auto",
    system_prompt: str | None = None,
    limit: int | None = None,
    *,
    mapping: dict[str, str] | None = None,
    strict: bool = False,
) -> ReadResult:
    """Read every record of a dataset file or directory into Samples, quarantining bad ones.

    Args:
        path: A dataset file, a ``datasets`` ``save_to_disk`` directory, or a
            directory of dataset files.
        fmt: ``auto`` (detected per record) or a format name: openai (also
            ``chat``), alpaca, sharegpt, preference, ranked, unpaired, text.
        system_prompt: System message prepended to alpaca records that have none.
        limit: Read at most this many records in all.
        mapping: ``{our field: their column}``, e.g. ``{"instruction": "question"}``.
        strict: Raise on the first bad record instead of quarantining it.

    Raises:
        DataError: the path is missing, of an unreadable type, or holds no
            records; a bad format or mapping; any bad record when ``strict``.
    """
    stream = DatasetStream(
        path, fmt, system_prompt, limit, mapping=mapping, strict=strict, keep_quarantined=True
    )
    samples = list(stream)
    return ReadResult(
        path=Path(path),
        samples=samples,
        quarantined=stream.quarantined,
        files=stream.files,
        skipped=stream.skipped,
        expanded=stream.expanded,
    )


class DatasetStream:
    """A dataset's Samples, one at a time, with the books kept as they are read.

    Iterating yields the Samples; each bad record goes to ``on_quarantine`` (and
    to ``quarantined`` when ``keep_quarantined``), or raises when ``strict``. Once
    exhausted, ``read + expanded = samples + quarantined`` holds per file and in
    all (``read`` counts records, ``samples`` what they became). Arguments are
    those of :func:`read_dataset`; ``limit`` counts records. ``key`` is the config
    key that errors name; ``source_name``, for a source of a mixture, goes into each
    sample's ``meta["source_name"]`` and before each file's name (``name/file:line``),
    so that equally named files of two sources stay apart. ``chunking`` is the
    ``(max_tokens, overlap_tokens)`` budget documents are cut to (``data.chunking``).
    """

    def __init__(
        self,
        path: str | Path,
        fmt: str = "auto",
        system_prompt: str | None = None,
        limit: int | None = None,
        *,
        mapping: dict[str, str] | None = None,
        strict: bool = False,
        on_quarantine: Callable[[Quarantined], None] | None = None,
        keep_quarantined: bool = False,
        key: str = "data.path",
        source_name: str | None = None,
        chunking: tuple[int, int] = (MAX_TOKENS, OVERLAP_TOKENS),
    ) -> None:
        self.path = Path(path)
        self.chunking = chunking
        self.fmt = check_format(fmt)
        self.mapping = check_mapping(mapping)
        self.system_prompt, self.limit, self.strict = system_prompt, limit, strict
        self.on_quarantine, self.keep_quarantined = on_quarantine, keep_quarantined
        self.key, self.source_name = key, source_name
        try:
            self.entries, self.skipped = dataset_files(self.path)
        except DataError as err:
            raise DataError(str(err).replace("data.path", key, 1)) from None
        if source_name is not None:
            for entry in self.entries:
                entry.name = f"{source_name}/{entry.name}"
        self.files: dict[str, FileBooks] = {}
        self.quarantined: list[Quarantined] = []
        self.reasons: Counter[str] = Counter()
        self.samples = 0
        self.expanded = 0

    @property
    def read(self) -> int:
        """Records read so far (a ranked record that expands counts once)."""
        return self.samples - self.expanded + sum(self.reasons.values())

    def __iter__(self) -> Iterator[Sample]:
        for entry in self.entries:
            if self.limit is not None and self.read >= self.limit:
                break
            if entry.kind != "datasets":  # a DatasetDict's books are per split, named on reading
                self.files.setdefault(entry.name, FileBooks())
            max_tokens, overlap_tokens = self.chunking
            for raw in iter_records(entry, max_tokens=max_tokens, overlap_tokens=overlap_tokens):
                if self.limit is not None and self.read >= self.limit:
                    break
                item = convert(raw, self.fmt, self.system_prompt, self.mapping)
                books = self.files.setdefault(raw.file, FileBooks())
                if isinstance(item, Quarantined):
                    self._quarantine(item, books)
                    continue
                for counts in (self, books):
                    counts.samples += len(item)
                    counts.expanded += len(item) - 1
                if self.source_name is not None:
                    for sample in item:
                        sample.meta[SOURCE_KEY] = self.source_name
                yield from item
        if self.read == 0:
            where = "the directory" if self.path.is_dir() else "the file"
            raise DataError(f"{self.key} {str(self.path)!r}: no records in {where}")

    def _quarantine(self, item: Quarantined, books: FileBooks) -> None:
        if self.strict:
            raise DataError(
                f"{item.source}: {item.reason}; fix the record, or turn strict off to quarantine it"
            )
        self.reasons[item.reason] += 1
        books.quarantined += 1
        if self.keep_quarantined:
            self.quarantined.append(item)
        if self.on_quarantine is not None:
            self.on_quarantine(item)


class SourcesStream:
    """Several :class:`DatasetStream` read one after the other, with books in all and per stream.

    It has the attributes of one stream that the data stage reads (``read``,
    ``expanded``, ``reasons``, ``files``), summed over the streams; ``streams``
    keeps each one's own books.
    """

    def __init__(self, streams: list[DatasetStream]) -> None:
        self.streams = streams

    def __iter__(self) -> Iterator[Sample]:
        for stream in self.streams:
            yield from stream

    @property
    def read(self) -> int:
        return sum(stream.read for stream in self.streams)

    @property
    def expanded(self) -> int:
        return sum(stream.expanded for stream in self.streams)

    @property
    def reasons(self) -> Counter[str]:
        return sum((stream.reasons for stream in self.streams), Counter())

    @property
    def files(self) -> dict[str, FileBooks]:
        return {name: books for stream in self.streams for name, books in stream.files.items()}


def iter_samples(
    path: str | Path,
    fmt: str = "auto",
    system_prompt: str | None = None,
    *,
    mapping: dict[str, str] | None = None,
) -> Iterator[Sample | Quarantined]:
    """Stream a dataset's records as Samples or Quarantined records, in reading order.

    The streaming twin of :func:`read_dataset` (same arguments) for data that
    should not be held in memory at once; JSON arrays are still parsed whole. A
    ranked record yields each of its samples in turn.
    """
    fmt = check_format(fmt)
    mapping = check_mapping(mapping)
    for entry in dataset_files(Path(path))[0]:
        for raw in iter_records(entry):
            item = convert(raw, fmt, system_prompt, mapping)
            if isinstance(item, Quarantined):
                yield item
            else:
                yield from item


def convert(
    raw: RawRecord, fmt: str, system_prompt: str | None, mapping: dict[str, str]
) -> list[Sample] | Quarantined:
    """One raw record as its Samples (several for a ranked record), or as a Quarantined one."""
    try:
        if isinstance(raw.value, BadRecord):
            raise raw.value
        return to_samples(raw.value, raw.source, fmt, system_prompt, mapping)
    except BadRecord as err:
        return Quarantined(raw.source, str(err), raw.raw_text())
