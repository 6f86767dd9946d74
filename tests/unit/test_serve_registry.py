"""The adapter registry: names, aliases, versions, and every way out of the registry refused."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from tuneforge.errors import ModelError
from tuneforge.serve.registry import AdapterRegistry, InvalidAdapter
from tuneforge.serve.types import UnknownAdapter


def write_adapter(folder: Path, weights: bytes = b"weights", **config: object) -> Path:
    """A folder that looks like a saved LoRA adapter (never loaded in these tests)."""
    folder.mkdir(parents=True)
    spec = {"peft_type": "LORA", "r": 4, **config}
    (folder / "adapter_config.json").write_text(json.dumps(spec))
    (folder / "adapter_model.safetensors").write_bytes(weights)
    return folder


@pytest.fixture
def root(tmp_path: Path) -> Path:
    registry = tmp_path / "registry"
    write_adapter(registry / "support-v3")
    write_adapter(registry / "legal", weights=b"other weights")
    return registry


def test_names_are_the_folders_holding_a_lora_adapter(root: Path, tmp_path: Path) -> None:
    write_adapter(root / "dora", use_dora=True)
    write_adapter(root / "ia3", peft_type="IA3")
    write_adapter(root / "has space")
    (root / "empty").mkdir()
    (root / "notes.txt").write_text("not an adapter")
    write_adapter(tmp_path / "outside")
    (root / "escape").symlink_to(tmp_path / "outside")
    assert AdapterRegistry(root).names() == ["legal", "support-v3"]


@pytest.mark.parametrize(
    "name",
    ["../legal", "..", "/abs", "/etc/passwd", "legal/..", "a/b", "", ".hidden", "-x", "x" * 65,
     "has space", "caf\u00e9", "nul\x00byte", "semi;colon", "~root", "lora"],
)  # fmt: skip
def test_unsafe_names_are_refused_before_the_disk_is_touched(root: Path, name: str) -> None:
    registry = AdapterRegistry(root)
    with pytest.raises(InvalidAdapter, match="adapter") as error:
        registry.resolve(name)
    assert isinstance(error.value, ValueError)  # the app answers 400
    assert "\n" not in str(error.value)


def test_traversal_to_a_real_adapter_outside_the_root_is_refused(
    root: Path, tmp_path: Path
) -> None:
    write_adapter(tmp_path / "secret")
    registry = AdapterRegistry(root)
    for name in ("../secret", str(tmp_path / "secret")):
        with pytest.raises(InvalidAdapter):
            registry.resolve(name)


def test_a_symlinked_folder_pointing_outside_is_unknown(root: Path, tmp_path: Path) -> None:
    write_adapter(tmp_path / "outside")
    (root / "escape").symlink_to(tmp_path / "outside", target_is_directory=True)
    with pytest.raises(UnknownAdapter, match="'escape': escape resolves outside"):
        AdapterRegistry(root).resolve("escape")


def test_a_symlinked_weights_file_pointing_outside_is_unknown(root: Path, tmp_path: Path) -> None:
    folder = root / "sneaky"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    (tmp_path / "stolen.safetensors").write_bytes(b"not yours")
    (folder / "adapter_model.safetensors").symlink_to(tmp_path / "stolen.safetensors")
    with pytest.raises(UnknownAdapter, match=r"adapter_model\.safetensors resolves outside"):
        AdapterRegistry(root).resolve("sneaky")


def test_a_symlink_that_stays_inside_the_root_is_followed(root: Path) -> None:
    (root / "current").symlink_to(root / "support-v3", target_is_directory=True)
    ref = AdapterRegistry(root).resolve("current")
    assert ref.name == "current" and ref.path == (root / "support-v3").resolve()
    assert ref.version == AdapterRegistry(root).resolve("support-v3").version


def test_missing_adapters_are_unknown_and_non_lora_ones_refused(root: Path) -> None:
    write_adapter(root / "dora", use_dora=True)
    write_adapter(root / "steer", peft_type="PREFIX_TUNING")
    (root / "half").mkdir()
    (root / "half" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    registry = AdapterRegistry(root)
    with pytest.raises(UnknownAdapter, match="'gpt-4': not in the adapter registry"):
        registry.resolve("gpt-4")
    with pytest.raises(InvalidAdapter, match="a DoRA adapter; the local engine serves LoRA"):
        registry.resolve("dora")
    with pytest.raises(InvalidAdapter, match="a PREFIX_TUNING adapter"):
        registry.resolve("steer")
    with pytest.raises(InvalidAdapter, match=r"'half': no adapter_model\.safetensors"):
        registry.resolve("half")


def test_aliases_resolve_to_their_adapter(root: Path) -> None:
    (root / "aliases.json").write_text(json.dumps({"support": "support-v3", "gone": "nope"}))
    registry = AdapterRegistry(root)
    assert registry.aliases() == {"support": "support-v3", "gone": "nope"}
    ref = registry.resolve("support")
    assert ref.name == "support-v3" and ref.path == (root / "support-v3").resolve()
    with pytest.raises(UnknownAdapter, match="'nope'"):
        registry.resolve("gone")
    assert registry.names() == ["legal", "support-v3"]  # aliases.json is no adapter


@pytest.mark.parametrize(
    ("aliases", "message"),
    [
        ('{"up": "../legal"}', "target of alias 'up'"),
        ('{"../up": "legal"}', "alias '../up'"),
        ('{"legal": "support-v3"}', "alias 'legal' is also a folder"),
        ('["legal"]', "expected an object"),
        ("{not json", "not readable JSON"),
    ],
)
def test_bad_alias_files_are_refused_naming_the_entry(
    root: Path, aliases: str, message: str
) -> None:
    (root / "aliases.json").write_text(aliases)
    with pytest.raises(InvalidAdapter, match=r"aliases\.json") as error:
        AdapterRegistry(root).resolve("legal")
    assert message in str(error.value)


def test_version_is_the_sha256_of_config_and_weights_and_follows_edits(root: Path) -> None:
    registry = AdapterRegistry(root)
    folder = root / "legal"
    expected = hashlib.sha256(
        (folder / "adapter_config.json").read_bytes()
        + (folder / "adapter_model.safetensors").read_bytes()
    ).hexdigest()
    assert registry.resolve("legal").version == expected
    assert registry.resolve("support-v3").version != expected  # different weights
    (folder / "adapter_model.safetensors").write_bytes(b"retrained weights")
    stat = (folder / "adapter_model.safetensors").stat()
    os.utime(folder / "adapter_model.safetensors", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    changed = registry.resolve("legal").version
    assert changed != expected
    assert (
        changed
        == hashlib.sha256(
            (folder / "adapter_config.json").read_bytes() + b"retrained weights"
        ).hexdigest()
    )


def test_construction_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"adapter registry .*: directory not found"):
        AdapterRegistry(tmp_path / "missing")
    with pytest.raises(ValueError, match="max_loaded must be at least 1, got 0"):
        AdapterRegistry(tmp_path, max_loaded=0)


def test_a_fine_tuned_adapter_is_listed_and_found_by_its_full_ft_name(root: Path) -> None:
    from tuneforge.serve.registry import NAME_FILE, fine_tuned_name, parse_fine_tuned

    job = "ftjob-0123456789abcdef01234567"
    name = fine_tuned_name("org/base-1", "support", job)
    assert parse_fine_tuned(name) == ("org/base-1", "support", job)
    assert parse_fine_tuned("ft:base::x") == ("base", "", "x") and parse_fine_tuned("ft:x") is None
    write_adapter(root / job)
    (root / job / NAME_FILE).write_text(name + "\n")
    registry = AdapterRegistry(root)
    assert registry.model_names("org/base-1") == [
        name,
        "org/base-1:legal",
        "org/base-1:support-v3",
    ]
    assert registry.resolve_model("org/base-1", name) == job
    assert registry.resolve_model("org/base-1", "org/base-1:legal") == "legal"
    for wrong in (f"ft:org/base-1:other:{job}", "ft:org/base-1:support:legal", "ft:b::../x"):
        with pytest.raises((UnknownAdapter, InvalidAdapter)):
            registry.resolve_model("org/base-1", wrong)
