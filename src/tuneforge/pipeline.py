"""The stages of a run, in data-flow order, with the keys that let unchanged ones be skipped.

config -> base (tiny model only) -> data -> train -> eval -> export. Each stage
reads only what earlier stages wrote into the run directory. A stage's key
hashes its config section, its input files and the keys of the stages it
reads, so a key can be computed before anything runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge.config import Config
from tuneforge.config.load import config_hash
from tuneforge.console import quiet_libraries, say
from tuneforge.data.configure import data_family
from tuneforge.errors import ConfigError, GateFailed
from tuneforge.models.local import check_local_model_dir, is_local
from tuneforge.runs import RunDir, StageResult, find_finished, run_stage, stage_key
from tuneforge.runs.hashing import cached_file_sha256, file_sha256, object_sha256, tree_sha256

if TYPE_CHECKING:
    from tuneforge.runs.lineage import Link
    from tuneforge.track.session import RunTracking

STAGES = ("base", "data", "train", "eval", "export")
COMMAND = {
    "data": "tuneforge data prepare",
    "train": "tuneforge train",
    "eval": "tuneforge eval",
    "export": "tuneforge export",
}


@dataclass
class Pipeline:
    """Runs or reuses the stages of one config in one run directory."""

    config: Config
    run: RunDir
    config_file: str
    force: bool = False
    resume: bool = False
    nproc: int = 1
    launcher_config: str | None = None
    override_gates: bool = False
    done: dict[str, StageResult] = field(default_factory=dict)
    tracking: RunTracking | None = None
    # Sees each training log line (step, loss, val_loss, ...) in this process; a search
    # reports validation losses to its pruner through it (an exception stops training).
    on_train_log: Callable[[dict[str, Any]], None] | None = None

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, trace: Any) -> None:
        """End the trackers' run: finished, failed (with the error) or killed."""
        if self.tracking is not None:
            from tuneforge.track.session import outcome

            self.tracking.close(*outcome(error))
            self.tracking = None

    def execute(self, stage: str) -> StageResult:
        """Run ``stage`` (or reuse an identical finished one), finding its inputs first."""
        quiet_libraries()
        for upstream in STAGES[: STAGES.index(stage)]:
            if upstream not in self.done and self._needed(upstream):
                self.require(upstream)
        if stage == "export":
            self.check_gates(export=True)
        work = getattr(self, f"_{stage}")
        result = run_stage(self.run, stage, self.material(stage), work, force=self.force, say=say)
        self.done[stage] = result
        self._track(result)
        return result

    def check_gates(self, *, export: bool = False) -> None:
        """Stop when the eval failed a gate: exit 3, naming each gate and by how much.

        Before an export, ``override_gates`` (``tuneforge export --force``) lets it
        through; the model card then records which gates it failed.
        """
        from tuneforge.eval.gates import failed_gates

        failed = failed_gates(self.done["eval"].summary) if "eval" in self.done else []
        if not failed or (export and self.override_gates):
            return
        detail = "; ".join(failed)
        if export:
            raise GateFailed(
                f"export refused: the eval failed {len(failed)} gate(s): {detail}. Improve the "
                f"model, or `tuneforge export {self.config_file} --force` (recorded in the card)"
            )
        raise GateFailed(f"{len(failed)} eval gate(s) failed: {detail}")

    def require(self, stage: str) -> StageResult:
        """Link a finished upstream stage into the run; only the tiny base model is built here."""
        earlier = find_finished(self.run.root, stage, stage_key(stage, self.material(stage)))
        if earlier is None and stage != "base":
            raise ConfigError(
                f"stage {stage!r} has not run for this config ({self.config_file}); "
                f"run `{COMMAND[stage]} {self.config_file}` first, or `tuneforge run`"
            )
        work = self._base if stage == "base" else _never
        result = run_stage(self.run, stage, self.material(stage), work, say=say)
        self.done[stage] = result
        self._track(result)
        return result

    def material(self, stage: str) -> dict[str, Any]:
        """What decides a stage's output: its config, inputs and upstream keys."""
        c = self.config
        if stage == "base":
            from tuneforge.models.tiny import BUILD_VERSION

            return {"tiny": c.model.tiny.model_dump(), "seed": c.seed, "build": BUILD_VERSION}
        if stage == "data":
            return {
                "data": c.data.model_dump(),
                "prepares": data_family(c.objective),
                "data_sha256": self._data_hash(),
                "model": self.model_identity(),
                "seed": c.seed,
            }
        upstream = {s: self._key(s) for s in STAGES[1 : STAGES.index(stage)]}
        sections = {
            "train": {
                "model": c.model.model_dump(),
                "method": c.method.model_dump(),
                "objective": c.objective,
                "preference": c.preference.model_dump(),
                "rl": c.rl.model_dump(),
                "rewards": self._reward_hashes(),
                "train": c.train.model_dump(),
                "seed": c.seed,
                "replay_sha256": self._input_hash(c.train.replay.path),
                "base_adapters": [
                    tree_sha256(a) if Path(a).is_dir() else "missing"
                    for a in c.method.base_adapters
                ],
            },
            "eval": {"eval": c.eval.model_dump()},
            "export": {"export": c.export.model_dump()},
        }
        return {**sections[stage], "model": self.model_identity(), "upstream": upstream}

    def model_identity(self) -> dict[str, Any]:
        """The base model's identity: the tiny stage key, content hashes, or hub id + revision."""
        spec = self.config.model
        if spec.name_or_path == "tiny":
            return {"tiny": self._key("base")}
        if is_local(spec.name_or_path):
            folder = check_local_model_dir(spec.name_or_path)
            files = sorted(p for p in folder.iterdir() if p.is_file())
            return {"path": str(folder), "files": {p.name: self._input_hash(p) for p in files}}
        return {"hub_id": spec.name_or_path, "revision": spec.revision}

    def model_path(self) -> str:
        if self.config.model.name_or_path == "tiny":
            return str(self.done["base"].path)
        return self.config.model.name_or_path

    def lineage(self) -> dict[str, Any]:
        data = self.done["data"].summary if "data" in self.done else {}
        return {
            "base_model": "tuneforge tiny model"
            if self.config.model.name_or_path == "tiny"
            else self.config.model.name_or_path,
            "data": {**data, "sha256": self._data_hash()},
            "train": self.done["train"].summary if "train" in self.done else {},
            "eval": self.done["eval"].summary if "eval" in self.done else {},
            "run_dir": str(self.run.path),
            "config_hash": config_hash(self.config),
        }

    def _track(self, result: StageResult) -> None:
        """Mirror a finished (or reused) stage into the trackers, when tracking is on."""
        if self.tracking is not None and result.name != "base":
            lineage = self.lineage() if result.name == "export" else None
            self.tracking.after_stage(result, lineage)

    def _reward_hashes(self) -> dict[str, str]:
        """Content of the RL reward model folder and reward-function files, when there are any."""
        rl, found = self.config.rl, {}
        if rl.reward_model:
            folder = Path(rl.reward_model)
            found["reward_model"] = tree_sha256(folder) if folder.is_dir() else "missing"
        for spec in rl.reward_functions:
            module = spec.partition(":")[0]
            found[spec] = self._input_hash(module) if module.endswith(".py") else "module"
        return found

    def _needed(self, stage: str) -> bool:
        return stage != "base" or self.config.model.name_or_path == "tiny"

    def _key(self, stage: str) -> str:
        return stage_key(stage, self.material(stage))

    def _data_hash(self) -> str | dict[str, str]:
        """The dataset's hash (as :meth:`_input_hash`), or each source's by name for a mixture."""
        data = self.config.data
        if data.sources is not None:
            return {source.name: self._input_hash(source.path) for source in data.sources}
        return self._input_hash(data.path)

    def _input_hash(self, path: str | Path | None) -> str:
        """sha256 of an input file, or over each file of an input folder; "missing" otherwise."""
        if not path:
            return "missing"
        path = Path(path)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            return object_sha256(
                {str(p.relative_to(path)): self.run.record_input(p) for p in files}
            )
        return self.run.record_input(path) if path.is_file() else "missing"

    # -- stage bodies: each writes into the folder it is given and returns a summary

    def _base(self, out: Path) -> dict[str, Any]:
        """Build the tiny model, or copy it from $TUNEFORGE_TINY_CACHE (same key as this stage)."""
        from tuneforge.models.tiny import cached_tiny_model

        spec, seed = self.config.model.tiny, self.config.seed
        return cached_tiny_model(out, spec, seed, key=self._key("base"), say=say)

    def _data(self, out: Path) -> dict[str, Any]:
        from tuneforge.data.prepare import prepare_data
        from tuneforge.models.load import load_tokenizer

        spec = self.config.model
        tokenizer = load_tokenizer(
            self.model_path(), revision=spec.revision, trust_remote_code=spec.trust_remote_code
        )
        return prepare_data(
            self.config.data, tokenizer, self.config.seed, out, objective=self.config.objective
        )  # every objective of the family prepares the same rows

    def _train(self, out: Path) -> dict[str, Any]:
        from tuneforge.train.launch import train_in_processes

        def log(**values: Any) -> None:
            self.run.log_metrics("train", **values)
            if self.on_train_log is not None:
                self.on_train_log(values)

        return train_in_processes(
            self.config,
            self.model_path(),
            self.done["data"].path,
            out,
            checkpoints=self.run.path / "checkpoints" / "train",
            key=self._key("train"),
            resume=self.resume,
            nproc=self.nproc,
            launcher_config=self.launcher_config,
            log=log,
            metrics_path=self.run.metrics_path,
            resume_hint=f"tuneforge train {self.config_file} --resume",
        )

    def _eval(self, out: Path) -> dict[str, Any]:
        from tuneforge.eval.evaluate import evaluate

        report = evaluate(
            self.config, self.model_path(), self.done["data"].path, self.done["train"].path, out
        )
        for model, values in report["values"].items():
            self.run.log_metrics("eval", model=model, **values)
        return report

    def _export(self, out: Path) -> dict[str, Any]:
        from tuneforge.eval.gates import failed_gates
        from tuneforge.export.formats import export_model, write_checksums
        from tuneforge.runs.lineage import write_lineage

        lineage = self.lineage()
        lineage["gates_overridden"] = failed_gates(self.done["eval"].summary)
        lineage["links"] = self.lineage_links()
        summary = export_model(
            self.config, self.model_path(), self.done["train"].path, out, lineage
        )
        record = write_lineage(
            out, lineage["links"], name=self.config.name, run_dir=str(self.run.path)
        )
        summary["lineage_files"] = sum(len(link["files"]) for link in record["chain"])
        write_checksums(out)
        return summary

    def lineage_links(self) -> list[Link]:
        """The chain behind an export: each input with the hashes it had when it was used."""
        from tuneforge.runs.lineage import Link, folder_hashes

        def cached(path: Path) -> str:
            return cached_file_sha256(path, self.run.root / ".hash-cache.json")

        data, train, evaluation = (self.done[s] for s in ("data", "train", "eval"))
        data_dir = data.path.resolve()
        outputs = data.summary.get("outputs", {})
        config_file = self.run.path / "config.yaml"
        books = {k: data.summary.get(k) for k in ("read", "kept", "dropped", "quarantined")}
        model = self.model_identity()
        if "tiny" in model:
            base = Link("base model", str(self.done["base"].path.resolve()), info=model)
            base.files = folder_hashes(self.done["base"].path, cached)
        elif "path" in model:
            base = Link("base model", model["path"], folder_hashes(Path(model["path"]), cached))
        else:
            base = Link("base model", model["hub_id"], info={"revision": model["revision"]})
        return [
            Link("raw data", ", ".join(self.config.data.input_paths()), self.raw_data_hashes()),
            Link(
                "prepared dataset",
                str(data_dir),
                {str(data_dir / name): digest for name, digest in outputs.items()},
                {"stage_key": data.key, **books},
            ),
            Link(
                "config",
                str(config_file),
                {str(config_file): file_sha256(config_file)},
                {"config_hash": config_hash(self.config), "seed": self.config.seed},
            ),
            base,
            Link(
                "checkpoint",
                str(train.path.resolve()),
                folder_hashes(train.path, cached),
                {"stage_key": train.key, "steps": train.summary.get("steps")},
            ),
            Link(
                "eval",
                str(evaluation.path.resolve()),
                {
                    str(evaluation.path.resolve() / "report.json"): file_sha256(
                        evaluation.path / "report.json"
                    )
                },
                {"stage_key": evaluation.key, "gates": _gate_word(evaluation.summary)},
            ),
        ]

    def raw_data_hashes(self) -> dict[str, str]:
        """sha256 of every raw input file: the dataset or each source of a mixture (a file, or
        each file in a folder), and the replay data."""
        found = {}
        for path in (*self.config.data.input_paths(), self.config.train.replay.path):
            if path and Path(path).exists():
                files = [Path(path)] if Path(path).is_file() else Path(path).rglob("*")
                found.update({str(p.resolve()): self._input_hash(p) for p in sorted(files)})
        return {path: digest for path, digest in found.items() if digest != "missing"}


def _gate_word(eval_summary: dict[str, Any]) -> str:
    from tuneforge.track.session import gate_status

    return gate_status(eval_summary)


def _never(_: Path) -> dict[str, Any]:
    raise AssertionError("a required stage was found finished and must not run")
