"""The data report: what was read, what each step did and why, and what will be trained.

Written as ``report.md`` (for terminals and reviews), ``report.html`` (a
self-contained page with the plots embedded) and ``token_lengths.png``.
"""

from __future__ import annotations

import base64
import html
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt

from tuneforge.data.sample import Sample


class ConversationStats:
    """Role counts and the distribution of turns per conversation, added one sample at a time."""

    def __init__(self) -> None:
        self.roles: Counter[str] = Counter()
        self.turns: Counter[int] = Counter()

    def add(self, sample: Sample) -> None:
        self.roles.update(m["role"] for m in sample.messages)
        self.turns[len(sample.messages)] += 1

    def to_json(self) -> dict[str, Any]:
        return {"roles": dict(self.roles), "turns": dict(sorted(self.turns.items()))}


def conversation_stats(samples: Iterable[Sample]) -> dict[str, Any]:
    """Role counts and the distribution of turns (messages) per conversation."""
    stats = ConversationStats()
    for sample in samples:
        stats.add(sample)
    return stats.to_json()


def plot_lengths(lengths: dict[str, list[int]], path: Path) -> Path:
    """Histogram of token lengths per split, saved as PNG."""
    figure, axis = plt.subplots(figsize=(7, 3.5), dpi=110)
    for split, values in lengths.items():
        if values:
            axis.hist(values, bins=40, alpha=0.6, label=f"{split} (n={len(values)})")
    axis.set_xlabel("tokens per sample")
    axis.set_ylabel("samples")
    axis.set_title("Token lengths after rendering")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def write_report(out_dir: Path, report: dict[str, Any]) -> dict[str, str]:
    """Write the Markdown and HTML reports and the plot; returns their file names.

    Args:
        out_dir: The data stage's folder.
        report: ``books`` (with ``expanded`` and the objective's ``pairs``,
            ``unpaired`` or ``prompts`` per split when there are any, and a
            mixture's ``mix`` and ``repeated``), ``steps``
            (StepStats JSON), ``lengths`` (per split), ``trained_tokens`` (per
            split), ``conversations``, ``pii`` (counts by type), ``clusters``
            (largest duplicate clusters), ``quarantine`` (counts by reason and
            examples), ``dropped_file`` (the file listing the dropped samples,
            or None where they were only counted).
    """
    png = plot_lengths(report.get("lengths", {}), out_dir / "token_lengths.png")
    sections = _sections(report)
    markdown = "\n\n".join(f"## {title}\n\n{markdown_table(body)}" for title, body in sections)
    (out_dir / "report.md").write_text(
        f"# Data report\n\n{markdown}\n\n![token lengths]({png.name})\n", encoding="utf-8"
    )
    image = base64.b64encode(png.read_bytes()).decode()
    page = "".join(f"<h2>{html.escape(t)}</h2>{html_table(body)}" for t, body in sections)
    (out_dir / "report.html").write_text(_PAGE.format(body=page, image=image), encoding="utf-8")
    return {"markdown": "report.md", "html": "report.html", "plot": png.name}


Table = tuple[list[str], list[list[Any]]]


def _sections(report: dict[str, Any]) -> list[tuple[str, Table]]:
    books = report["books"]
    trained = report.get("trained_tokens", {})
    out: list[tuple[str, Table]] = [
        ("Books", _books_table(books)),
        ("Per source file", _files_table(books.get("files", {}))),
        *_mix_sections(books.get("mix")),
        (
            _steps_title(report),
            (
                ["step", "seen", "kept", "changed", "dropped (by reason)"],
                [
                    [s["name"], s["seen"], s["kept"], s["changed"], _reasons(s["dropped"])]
                    for s in report.get("steps", [])
                ],
            ),
        ),
        (
            "Splits and tokens",
            (
                ["split", "samples", "tokens", "trained tokens"],
                [
                    [split, len(lengths), sum(lengths), trained.get(split, 0)]
                    for split, lengths in report.get("lengths", {}).items()
                ],
            ),
        ),
    ]
    outputs = _objective_rows(books)
    if outputs is not None:
        out.append(outputs)
    conversations = report.get("conversations", {})
    if conversations:
        out.append(("Roles", (["role", "messages"], sorted(conversations["roles"].items()))))
        out.append(
            (
                "Turns per conversation",
                (["messages", "conversations"], list(conversations["turns"].items())),
            )
        )
    packing = report.get("packing", {})
    if packing:
        out.append(
            (
                "Packing (packed/<split>.parquet)",
                (
                    ["split", "samples", "rows", "row length", "efficiency (tokens / slots)"],
                    [
                        [split, p["samples"], p["rows"], p["seq_len"], f"{p['efficiency']:.1%}"]
                        for split, p in packing.items()
                    ],
                ),
            )
        )
    if report.get("pii"):
        out.append(("PII found", (["type", "count"], sorted(report["pii"].items()))))
    if report.get("clusters"):
        out.append(
            (
                "Largest duplicate clusters",
                (
                    ["kept sample", "duplicates", "examples"],
                    [
                        [
                            c["representative"],
                            c["size"],
                            " | ".join(e["excerpt"] for e in c["examples"])[:200],
                        ]
                        for c in report["clusters"]
                    ],
                ),
            )
        )
    quarantine = report.get("quarantine", {})
    if quarantine.get("reasons"):
        out.append(
            (
                "Quarantine (quarantine.jsonl)",
                (["reason", "records"], sorted(quarantine["reasons"].items())),
            )
        )
    if report.get("bias"):
        from tuneforge.data.bias_audit import tables

        out += tables(report["bias"])
    return out


def _steps_title(report: dict[str, Any]) -> str:
    """The steps section's title, naming where the dropped samples are listed."""
    if "dropped_file" not in report:
        return "Steps"
    if report["dropped_file"] is None:
        return "Steps (dropped samples counted, not listed: the Spark engine)"
    return f"Steps (dropped samples listed in {report['dropped_file']})"


def _books_table(books: dict[str, Any]) -> Table:
    """read, kept, dropped, quarantined; with ``expanded`` when ranked records expanded,
    and ``repeated`` when a mixture repeated samples."""
    header, row = ["read"], [books["read"]]
    for extra in ("expanded", "repeated"):
        if books.get(extra):
            header[0] = "read (records)"
            header.append(extra)
            row.append(books[extra])
    header += ["kept", "dropped", "quarantined"]
    row += [books["kept"], sum(books["dropped"].values()), books["quarantined"]]
    return header, [row]


def _mix_sections(mix: dict[str, Any] | None) -> list[tuple[str, Table]]:
    """The final mix per source, when the data is a mixture (``data.sources``)."""
    if not mix:
        return []
    how = mix["strategy"]
    if "temperature" in mix:
        how += f", T = {mix['temperature']}"
    header = [
        "source",
        "path",
        "read",
        "kept after cleaning",
        "capped",
        "sampled out",
        "taken into the mix",
        "repeated",
        "training samples",
        "share of training split",
        "target share",
        "weight",
    ]
    rows = [
        [
            name,
            row["path"],
            row["read"],
            row["usable"],
            row["capped"],
            row["sampled_out"],
            row["taken"],
            row["repeated"],
            row["splits"].get("train", 0),
            f"{row['train_share']:.1%}",
            f"{row['share']:.1%}",
            row["weight"],
        ]
        for name, row in mix["sources"].items()
    ]
    if mix.get("allow_repeat"):
        how += ", repeats in the training split only"
    return [(f"Mix ({how}; {mix['total']} samples planned)", (header, rows))]


def _files_table(files: dict[str, dict[str, int]]) -> Table:
    """read and quarantined per file; with ``expanded`` when a file's records expanded."""
    if any(n.get("expanded") for n in files.values()):
        rows = [[f, n["read"], n.get("expanded", 0), n["quarantined"]] for f, n in files.items()]
        return ["file", "read", "expanded", "quarantined"], rows
    return ["file", "read", "quarantined"], [
        [f, n["read"], n["quarantined"]] for f, n in files.items()
    ]


def _objective_rows(books: dict[str, Any]) -> tuple[str, Table] | None:
    """Rows written for the objective per split (pairs, unpaired by label, or prompts)."""
    for output in ("pairs", "prompts"):
        if output in books:
            rows = [[split, n] for split, n in books[output].items()]
            return f"Training rows ({output}/<split>.parquet)", (["split", output], rows)
    if "unpaired" in books:
        return (
            "Training rows (unpaired/<split>.parquet)",
            (
                ["split", "desirable", "undesirable"],
                [[s, n["desirable"], n["undesirable"]] for s, n in books["unpaired"].items()],
            ),
        )
    return None


def _reasons(dropped: dict[str, int]) -> str:
    return ", ".join(f"{reason}: {n}" for reason, n in sorted(dropped.items())) or "-"


def markdown_table(table: Table) -> str:
    """A (header, rows) table as Markdown; "(none)" for no rows."""
    header, rows = table
    if not rows:
        return "(none)"
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [
        "| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows
    ]
    return "\n".join(lines)


def html_table(table: Table) -> str:
    """A (header, rows) table as escaped HTML."""
    header, rows = table
    if not rows:
        return "<p>(none)</p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tuneforge data report</title>
<style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}}
table{{border-collapse:collapse;margin-bottom:1rem}}
td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}}th{{background:#f3f3f3}}
</style></head>
<body><h1>Data report</h1>{body}
<h2>Token lengths</h2><img alt="token lengths" src="data:image/png;base64,{image}"></body></html>
"""
