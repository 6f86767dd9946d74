"""Read a YAML config, apply ``--set`` overrides, validate, and explain errors in one line."""

from __future__ import annotations

import difflib
import hashlib
import json
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from tuneforge.config.schema import Config
from tuneforge.errors import ConfigError

Loc = tuple[str | int, ...]


def load_config(
    path: str | Path, overrides: list[str] | None = None, *, base_dir: Path | None = None
) -> Config:
    """Load, override and validate a config file.

    Args:
        path: YAML file.
        overrides: ``dotted.key=value`` strings; values are parsed as YAML scalars.
        base_dir: Where relative paths resolve (default: the file's folder); an edited
            copy of a config resolves them against the original's folder.

    Returns:
        The validated config. Relative data/model paths resolve against ``base_dir``.

    Raises:
        ConfigError: with one line naming the file, line, key or value at fault.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found; pass the path to a YAML file")
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        context = getattr(err, "context_mark", None)
        if context and mark and context.line != mark.line:
            problem += f" (in the block that starts on line {context.line + 1})"
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top, got {_kind(raw)}")
    lines = _key_lines(node)
    overridden: dict[Loc, str] = {}
    for item in overrides or []:
        loc = apply_override(raw, item)
        overridden[loc] = item
    config = _validate(raw, path, lines, overridden)
    return _resolve_paths(config, base_dir or path.parent)


def apply_override(raw: dict[str, Any], item: str) -> Loc:
    """Set ``dotted.key=value`` in a raw config dict, checking the key against the schema.

    Returns:
        The location that was set, for error messages.
    """
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.lr=1e-4")
    dotted, _, text = item.partition("=")
    keys = dotted.strip().split(".")
    model: type[BaseModel] | None = Config
    for depth, key in enumerate(keys):
        fields = model.model_fields if model else {}
        if key not in fields:
            where = ".".join(keys[:depth]) or "the top level"
            raise ConfigError(
                f"--set {item}: unknown key {key!r} in {where}{_suggest(key, fields)}"
            )
        model = _submodel(fields[key].annotation)
        if depth < len(keys) - 1 and model is None:
            raise ConfigError(f"--set {item}: {'.'.join(keys[: depth + 1])} has no sub-keys")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    target = raw
    for key in keys[:-1]:
        if not isinstance(target.get(key), dict):
            target[key] = {}
        target = target[key]
    target[keys[-1]] = value
    return tuple(keys)


EXCLUDED_FROM_HASH = {"track", "tune", "serve", "service", "synth"}


def config_hash(obj: BaseModel | dict[str, Any]) -> str:
    """Stable sha256 of a config or section (JSON with sorted keys).

    A whole config is hashed without its ``track``, ``tune``, ``serve``, ``service`` and
    ``synth`` sections: where a run is reported, how a search explores and how its model is
    served do not
    change what it produces, so they must not change which run a config matches.
    """
    if isinstance(obj, Config):
        data = obj.model_dump(mode="json", exclude=EXCLUDED_FROM_HASH)
    else:
        data = obj.model_dump(mode="json") if isinstance(obj, BaseModel) else obj
    blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def dump_config(config: Config) -> str:
    """The resolved config as YAML, in schema order."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def _validate(raw: dict, path: Path, lines: dict[Loc, int], overridden: dict[Loc, str]) -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        errors = err.errors()
        first = errors[0]
        loc: Loc = tuple(first["loc"])
        where = _where(loc, path, lines, overridden)
        key = ".".join(str(part) for part in loc) or "config"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        if first["type"] == "extra_forbidden":
            fields = _fields_at(loc[:-1])
            msg = f"unknown key {str(loc[-1])!r}{_suggest(str(loc[-1]), fields)}"
            key = ".".join(str(part) for part in loc[:-1]) or "top level"
            raise ConfigError(f"{where}: {key}: {msg}{more}") from None
        if first["type"] == "missing":
            raise ConfigError(f"{where}: {key}: required key is missing{more}") from None
        value = first.get("input")
        shown = f" = {value!r}" if not isinstance(value, dict | list) else ""
        reason = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{where}: {key}{shown}: {reason}{more}") from None


def _where(loc: Loc, path: Path, lines: dict[Loc, int], overridden: dict[Loc, str]) -> str:
    for depth in range(len(loc), 0, -1):
        if loc[:depth] in overridden:
            return f"--set {overridden[loc[:depth]]}"
        if loc[:depth] in lines:
            return f"{path}:{lines[loc[:depth]]}"
    return str(path)


def _key_lines(node: yaml.Node | None, prefix: Loc = ()) -> dict[Loc, int]:
    """Map each key path in a composed YAML document to its 1-based line."""
    found: dict[Loc, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            loc = (*prefix, key_node.value)
            found[loc] = key_node.start_mark.line + 1
            found.update(_key_lines(value_node, loc))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            loc = (*prefix, index)
            found[loc] = item.start_mark.line + 1
            found.update(_key_lines(item, loc))
    return found


def _submodel(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _fields_at(loc: Loc) -> dict[str, Any]:
    model: type[BaseModel] | None = Config
    for key in loc:
        if isinstance(key, int):  # an item of a list of sections (data.sources)
            continue
        if model is None or key not in model.model_fields:
            return {}
        annotation = model.model_fields[key].annotation
        model = _submodel(annotation) or _list_item_model(annotation)
    return model.model_fields if model else {}


def _list_item_model(annotation: Any) -> type[BaseModel] | None:
    """The section type of ``list[Section]`` (or ``list[Section] | None``), else None."""
    for option in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(option) is list:
            return _submodel(typing.get_args(option)[0])
    return None


def _suggest(key: str, choices: Any) -> str:
    close = difflib.get_close_matches(key, list(choices), n=1, cutoff=0.5)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; valid keys: {', '.join(choices)}" if choices else ""


def _kind(value: Any) -> str:
    return type(value).__name__


RUN_PREFIX = "run:"


def resolve_run_reference(value: str, runs_dir: str, key: str) -> str:
    """``run:NAME`` -> the merged model exported by the newest finished run named NAME.

    Other values are returned unchanged. This is how one config builds on another
    (SFT -> reward model -> RL): the later config names the earlier run.

    Raises:
        ConfigError: no run of that name has finished its export stage.
    """
    if not value.startswith(RUN_PREFIX):
        return value
    name = value.removeprefix(RUN_PREFIX)
    root = Path(runs_dir).expanduser().resolve() / name
    finished = [marker.parent for marker in root.glob("*/export/_stage.json") if marker.is_file()]
    merged = [f.resolve() / "merged" for f in finished if (f / "merged" / "config.json").is_file()]
    if not merged:
        raise ConfigError(
            f"{key} {value!r}: no finished run named {name!r} with a merged export under "
            f"{root.parent}; run that config first (tuneforge run CONFIG)"
        )
    return str(max(merged, key=lambda folder: (folder / "config.json").stat().st_mtime))


def resolve_run_references(config: Config) -> Config:
    """Replace ``run:NAME`` in model.name_or_path and rl.reward_model by the exported folders.

    Done when a config is about to run (not when it is loaded), so a config that builds
    on a run which does not exist yet still validates.
    """
    spec = config.model
    spec.name_or_path = resolve_run_reference(
        spec.name_or_path, config.runs_dir, "model.name_or_path"
    )
    if config.rl.reward_model:
        config.rl.reward_model = resolve_run_reference(
            config.rl.reward_model, config.runs_dir, "rl.reward_model"
        )
    return config


def _resolve_paths(config: Config, base: Path) -> Config:
    """Make data, replay, adapter and local model paths absolute (relative to the config)."""
    data = config.data
    if data.path is not None and not Path(data.path).expanduser().is_absolute():
        data.path = str((base / Path(data.path).expanduser()).resolve())
    for source in data.sources or []:
        if not Path(source.path).expanduser().is_absolute():
            source.path = str((base / Path(source.path).expanduser()).resolve())
    name = config.model.name_or_path
    reward_model = config.rl.reward_model
    relative = reward_model and not Path(reward_model).expanduser().is_absolute()
    if relative and not reward_model.startswith(RUN_PREFIX):
        config.rl.reward_model = str((base / Path(reward_model).expanduser()).resolve())
    for index, spec in enumerate(config.rl.reward_functions):
        module, _, function = spec.partition(":")
        file = Path(module if module.endswith(".py") else f"{module}.py")
        if not file.is_absolute() and (base / file).is_file():
            config.rl.reward_functions[index] = f"{(base / file).resolve()}:{function}"
    if (
        name != "tiny"
        and not name.startswith(RUN_PREFIX)
        and (name.startswith((".", "/", "~")) or (base / name).is_dir())
    ):
        model_path = Path(name).expanduser()
        if not model_path.is_absolute():
            model_path = (base / model_path).resolve()
        config.model.name_or_path = str(model_path)
    replay = config.train.replay
    if replay.path and not Path(replay.path).expanduser().is_absolute():
        replay.path = str((base / Path(replay.path).expanduser()).resolve())
    for index, adapter in enumerate(config.method.base_adapters):
        if not Path(adapter).expanduser().is_absolute():
            config.method.base_adapters[index] = str((base / Path(adapter).expanduser()).resolve())
    _resolve_eval_paths(config, base)
    _resolve_synth_paths(config, base)
    return config


def _resolve_synth_paths(config: Config, base: Path) -> None:
    """The synth output folder, the answer files, and each task's source and dedup datasets."""
    synth = config.synth

    def absolute(value: str) -> str:
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else (base / path).resolve())

    synth.out_dir = absolute(synth.out_dir)
    synth.answers = [absolute(path) for path in synth.answers]
    for task in synth.tasks:
        task.source = absolute(task.source)
        task.dedup_against = [absolute(path) for path in task.dedup_against]


def _resolve_eval_paths(config: Config, base: Path) -> None:
    """Eval inputs (texts, probes, prompts, schema) are relative to the config, too."""

    def absolute(path: str) -> str:
        path_obj = Path(path).expanduser()
        return str(path_obj if path_obj.is_absolute() else (base / path_obj).resolve())

    spec = config.eval
    spec.retention.texts = [absolute(p) for p in spec.retention.texts]
    spec.bias.probes = [absolute(p) for p in spec.bias.probes]
    spec.safety.prompts = [absolute(p) for p in spec.safety.prompts]
    if spec.json_schema:
        spec.json_schema = absolute(spec.json_schema)
    if spec.retention.lm_eval_include:
        spec.retention.lm_eval_include = absolute(spec.retention.lm_eval_include)
