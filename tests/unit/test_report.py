"""The data report holds the books, the steps' reasons, and a real plot."""

from __future__ import annotations

from pathlib import Path

from tuneforge.data.report import conversation_stats, write_report
from tuneforge.data.sample import Sample


def test_report_files_and_contents(tmp_path: Path) -> None:
    samples = [
        Sample(
            id="1",
            kind="chat",
            source="f:1",
            messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
        ),
        Sample(
            id="2",
            kind="chat",
            source="f:2",
            messages=[
                {"role": "system", "content": "s"},
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
            ],
        ),
    ]
    report = {
        "books": {
            "read": 5,
            "kept": 2,
            "dropped": {"exact_duplicate": 2},
            "quarantined": 1,
            "files": {"f.jsonl": {"read": 5, "quarantined": 1}},
        },
        "steps": [
            {
                "name": "dedup_exact",
                "seen": 4,
                "kept": 2,
                "changed": 0,
                "dropped": {"exact_duplicate": 2},
            }
        ],
        "lengths": {"train": [10, 12], "val": [11], "test": []},
        "trained_tokens": {"train": 6, "val": 3, "test": 0},
        "conversations": conversation_stats(samples),
        "pii": {"EMAIL": 3},
        "clusters": [
            {
                "representative": "f:1",
                "size": 3,
                "duplicates": ["f:3", "f:4"],
                "examples": [{"id": "f:3", "similarity": 1.0, "excerpt": "same text"}],
            }
        ],
        "quarantine": {"reasons": {"invalid JSON": 1}},
    }
    files = write_report(tmp_path, report)
    assert files == {"markdown": "report.md", "html": "report.html", "plot": "token_lengths.png"}
    markdown = (tmp_path / "report.md").read_text()
    assert "| 5 | 2 | 2 | 1 |" in markdown
    assert "| dedup_exact | 4 | 2 | 0 | exact_duplicate: 2 |" in markdown
    assert "| train | 2 | 22 | 6 |" in markdown
    assert "| EMAIL | 3 |" in markdown and "| invalid JSON | 1 |" in markdown
    assert "| assistant | 2 |" in markdown and "| 3 | 1 |" in markdown
    page = (tmp_path / "report.html").read_text()
    assert page.count("<table>") == markdown.count("\n|---") == 9
    assert "data:image/png;base64," in page
    assert (tmp_path / "token_lengths.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
