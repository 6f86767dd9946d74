"""An export records its lineage and card; `tuneforge lineage` re-verifies the chain."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tuneforge.cli.main import main
from tuneforge.runs.hashing import file_sha256
from tuneforge.runs.lineage import LINKS

REPO = Path(__file__).resolve().parents[2]
TICKETS = REPO / "examples" / "data" / "support_tickets.jsonl"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """One small run whose dataset is a folder of two files; returns its export folder."""
    root = tmp_path_factory.mktemp("lineage")
    data = root / "tickets"
    data.mkdir()
    lines = TICKETS.read_text().splitlines()[:80]
    (data / "a.jsonl").write_text("\n".join(lines[:40]) + "\n")
    (data / "b.jsonl").write_text("\n".join(lines[40:]) + "\n")
    config = root / "lineage.yaml"
    config.write_text(
        f"name: lineage\nruns_dir: {root / 'runs'}\n"
        f"model:\n  name_or_path: {tiny_model_dir}\n"
        f"data:\n  path: {data}\n"
        "train:\n  max_steps: 3\n  batch_size: 4\n  lr: 1.0e-3\n"
        "eval:\n  max_samples: 4\n  max_new_tokens: 8\n  gates: ['loss <= 100']\n"
        "export:\n  license: apache-2.0\n  intended_use: Routing support tickets.\n"
        "  limitations: [English tickets only.]\n"
    )
    assert main(["run", str(config)]) == 0
    (run,) = (root / "runs" / "lineage").iterdir()
    return run / "export"


def test_the_export_records_every_link_with_hashes(exported: Path) -> None:
    record = json.loads((exported / "lineage.json").read_text())
    chain = {link["step"]: link for link in record["chain"]}
    assert list(chain) == list(LINKS)
    data = exported.parent.parent.parent.parent / "tickets"
    assert chain["raw data"]["files"] == {
        str(data / name): file_sha256(data / name) for name in ("a.jsonl", "b.jsonl")
    }
    run = exported.parent
    manifest = json.loads((run / "manifest.json").read_text())
    assert chain["config"]["info"]["config_hash"] == manifest["config_hash"]
    assert chain["prepared dataset"]["info"]["stage_key"] == manifest["stages"]["data"]["key"]
    assert chain["prepared dataset"]["info"]["read"] == 80
    weights = str((run / "train" / "adapter" / "adapter_model.safetensors").resolve())
    assert chain["checkpoint"]["files"][weights] == file_sha256(weights)
    assert "model.safetensors" in {Path(p).name for p in chain["base model"]["files"]}
    artifact = chain["artifact"]["files"]
    assert artifact["merged/model.safetensors"] == file_sha256(
        exported / "merged/model.safetensors"
    )
    assert "README.md" in artifact and "lineage.json" not in artifact


def test_the_card_has_every_section(exported: Path) -> None:
    card = (exported / "README.md").read_text()
    assert card.startswith("---\n") and "license: apache-2.0" in card
    for heading in (
        "## Model details",
        "## Training data",
        "## Evaluation",
        "### Quality gates",
        "| pass | loss <= 100 |",
        "### Forgetting",
        "### Bias",
        "### Safety",
        "## Intended use\n\nRouting support tickets.",
        "## Limitations",
        "## Licence",
        "## How to use and serve",
        "## Lineage",
    ):
        assert heading in card, heading
    assert "- English tickets only." in card
    assert "80 records read" in card and "PII" in card
    assert "| method.r | 16 |" in card and "| train.lr | 0.001 |" in card
    assert "| exact_dedup |" in card and "| near_dedup |" in card


def test_lineage_verifies_and_names_a_changed_input(
    exported: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["lineage", str(exported / "merged")]) == 0
    shown = capsys.readouterr().out
    for step in LINKS:
        assert step in shown
    assert "CHANGED" not in shown and "missing" not in shown
    raw = exported.parents[3] / "tickets" / "b.jsonl"
    original = raw.read_bytes()
    try:
        raw.write_bytes(original + b"\n")
        assert main(["lineage", str(exported.parent), "--json"]) == 1
        captured = capsys.readouterr()
        checks = json.loads(captured.out)["checks"]
        changed = [c["path"] for c in checks if c["status"] == "changed"]
        assert changed == [str(raw)]
        assert "b.jsonl (raw data: changed)" in captured.err.replace("\n", "")
    finally:
        raw.write_bytes(original)


def test_a_copied_export_still_verifies_its_own_files(exported: Path, tmp_path: Path) -> None:
    copy = tmp_path / "shipped"
    shutil.copytree(exported, copy)
    assert main(["lineage", str(copy)]) == 0
    (copy / "README.md").write_text("edited")
    assert main(["lineage", str(copy)]) == 1
    assert main(["lineage", str(tmp_path)]) == 2  # no lineage.json here or above
