"""Start-up checks of what a user typed: one line per problem that names the key and the fix.

Two steps. ``override_problem`` runs before Hydra: it composes the config with the command line's
overrides as Hydra is about to, and turns an unknown key, an unknown group option or a syntax error
into one line with close matches (Hydra's own 7-13 lines suggest ``+key=value``, which only adds a key
nothing reads). ``config_problems`` runs on the composed config: a pydantic schema of the values the
stages take as numbers, sizes and ranges, so ``seed=abc`` says "seed" instead of "invalid literal for int()".
"""
from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, Literal

from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gen4gen.errors import UserError

MIN_CANVAS_SIDE = 64


def canvas_size(value: Any, max_pixels: int | None = None) -> tuple[int, int]:
    """``compose.size``: 1024 or [W, H], at least 64 px a side and at most ``io.max_pixels`` pixels, the
    bound every input image gets (a 20000x20000 canvas took 104 s and 8 GB for one composition)."""
    try:
        w, h = (int(value), int(value)) if isinstance(value, (int, float)) else (int(v) for v in value)
    except (TypeError, ValueError):
        raise UserError(f"compose.size={value}: expected a side in pixels (1024) or [W, H]") from None
    if w < MIN_CANVAS_SIDE or h < MIN_CANVAS_SIDE:
        raise UserError(f"compose.size={[w, h]} is too small; use at least {MIN_CANVAS_SIDE} px a side")
    if max_pixels is not None and w * h > max_pixels:
        raise UserError(f"compose.size={[w, h]} is {w}x{h} = {w * h / 1e6:.0f} MP, over the limit of "
                        f"{max_pixels / 1e6:.0f} MP (io.max_pixels); use a smaller canvas or raise the limit")
    return w, h


def build_backend(node: DictConfig, group: str, **extra: Any):
    """Instantiate a backend node (``segmenter``, ``layout``, ``inpainter``, ``captioner``). A constructor that
    refuses its settings (``segmenter.iterations=abc``, ``+segmenter.bogus=1``) is one line naming the group,
    not Hydra's wrapped exception worded as a crash; a ``UserError`` of its own (no GPU) reaches the user as is."""
    from hydra.utils import instantiate

    try:
        return instantiate(node, **extra)
    except Exception as e:  # noqa: BLE001 - Hydra wraps what the constructor raised
        cause = e.__cause__ or e.__context__ or e
        if isinstance(cause, UserError):
            raise cause from None
        raise UserError(f"cannot build the {group} {node.get('_target_')}: {type(cause).__name__}: {cause}; "
                        f"check the {group}.* settings (`python -m gen4gen --cfg job` shows them)") from None


# ---------------------------------------------------------------- the composed config
class _Section(BaseModel):
    model_config = ConfigDict(extra="allow")  # only the keys checked here; the rest is each stage's own


class _Shard(_Section):
    index: int = Field(ge=0)
    count: int = Field(ge=1)


class _IO(_Section):
    max_pixels: int = Field(ge=1)
    min_side: int = Field(ge=1)


class _Segment(_Section):
    rounds: int = Field(ge=1)


class _Augment(_Section):
    flip: bool
    max_rotation: float = Field(ge=0, le=180)
    max_shift: float = Field(ge=0, le=0.5)


class _Compose(_Section):
    min_objects: int = Field(ge=1)
    num_samples: int = Field(ge=1)
    size: Any
    min_visible: float = Field(ge=0, le=1)
    max_attempts: int = Field(ge=1)
    counts: dict[str, int] | None = None
    augment: _Augment

    @field_validator("counts")
    @classmethod
    def _positive(cls, v):
        bad = {k: n for k, n in (v or {}).items() if n < 1}
        if bad:
            raise ValueError(f"each count must be at least 1, got {bad}")
        return v


class _Repaint(_Section):
    max_backgrounds: int = Field(ge=1)
    source: Literal["auto", "photo", "noise", "procedural"]
    photo_blur: float = Field(ge=0)
    blur: int = Field(ge=0)
    mask_low: float = Field(ge=0, le=255)
    mask_high: float = Field(ge=0, le=255)
    mask_solid: float = Field(ge=0, le=1)
    invert: bool


class _Caption(_Section):
    max_words: int = Field(ge=1)


class _BenchMetrics(_Section):
    batch_size: int = Field(ge=1)
    chunk_size: int = Field(ge=1)


class _Bench(_Section):
    batch_size: int = Field(ge=1)
    metrics: _BenchMetrics


class _Search(_Section):
    top_k: int = Field(ge=1)
    batch_size: int = Field(ge=1)


class _Export(_Section):
    reference_size: int = Field(ge=16)
    thumb_size: int = Field(ge=16)
    gallery_per_scene: int = Field(ge=0)
    shard_maxcount: int = Field(ge=1)
    shard_maxsize: int = Field(ge=1)
    mask_threshold: int = Field(ge=1, le=255)


class _LLM(_Section):
    concurrency: int = Field(ge=1)
    timeout: float = Field(gt=0)
    connect_timeout: float = Field(10.0, gt=0)
    max_reply_mb: float = Field(8.0, gt=0)
    max_retries: int = Field(ge=0)
    max_attempts: int = Field(ge=1)
    temperature: float = Field(ge=0)
    fallback_on_unreachable: bool = False


class _Config(_Section):
    seed: int
    workers: int = Field(ge=1)
    strict: bool
    shard: _Shard
    io: _IO
    segment: _Segment
    compose: _Compose
    repaint: _Repaint
    caption: _Caption
    export: _Export
    bench: _Bench
    search: _Search
    llm: _LLM


_WHAT = {"int_parsing": "expected a whole number", "int_type": "expected a whole number",
         "int_from_float": "expected a whole number", "float_parsing": "expected a number",
         "float_type": "expected a number", "bool_parsing": "expected true or false", "bool_type": "expected true or false",
         "dict_type": "expected a mapping, e.g. {cat: 2}", "model_type": "expected a group of keys",
         "model_attributes_type": "expected a group of keys", "missing": "missing; restore it or remove the override"}


def config_problems(cfg: DictConfig) -> list[str]:
    """One line per bad value of ``cfg``, each naming its key, the value and what is expected."""
    data = {}
    for key in _Config.model_fields:  # only what is checked here: another stage's interpolation is its own
        if key not in cfg:
            continue  # pydantic says "missing"
        node = cfg.get(key)
        try:
            data[key] = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
        except Exception as e:  # noqa: BLE001 - an interpolation that does not resolve (${oc.env:...})
            return [f"{key}: a value does not resolve: {str(e).splitlines()[0]}"]
    try:
        parsed = _Config.model_validate(data)
    except ValidationError as e:
        return [_line(err) for err in e.errors()]
    problems = []
    if parsed.shard.index >= parsed.shard.count:
        problems.append(f"shard.index={parsed.shard.index} is not below shard.count={parsed.shard.count}; "
                        f"use shard.index=0..{parsed.shard.count - 1}")
    try:
        canvas_size(parsed.compose.size, parsed.io.max_pixels)
    except UserError as e:
        problems.append(str(e))
    return problems


# the stages whose backend node may hold an ``llm`` block (layout=llm, captioner=llm|vlm)
LLM_USERS = {"s2": ("layout", "layout planner"), "s4": ("captioner", "captioner")}


def missing_key_notes(cfg: DictConfig, names: list[str]) -> list[str]:
    """For a run of several stages: one line per later stage that will ask an LLM whose key is not set, said
    before the earlier stages spend their time (that stage itself stops with the same reason, unless its
    replies are cached or ``llm.fallback_on_unreachable`` is set)."""
    llm = cfg.get("llm") or {}
    env = llm.get("api_key_env")
    if not env or os.environ.get(env) or llm.get("fallback_on_unreachable"):
        return []
    notes = []
    for stage in names[1:]:
        group, what = LLM_USERS.get(stage, (None, ""))
        if group and "llm" in (cfg.get(group) or {}):
            notes.append(f"{stage}: its {what} asks the LLM, but {env} is not set: that stage will stop unless its "
                         f"replies are cached; export {env} now (or llm.fallback_on_unreachable=true)")
    return notes


def _line(err: dict) -> str:
    key = ".".join(str(p) for p in err["loc"])
    what = _WHAT.get(err["type"])
    if what is None:
        what = err["msg"][0].lower() + err["msg"][1:]
        what = what.removeprefix("value error, ")
        bounds = {"ge": "at least", "gt": "over", "le": "at most", "lt": "under"}
        what = next((f"must be {word} {err['ctx'][k]}" for k, word in bounds.items() if k in (err.get("ctx") or {})),
                    what)
    if err["type"] == "literal_error":
        what = f"choose one of {err['ctx']['expected']}"
    if err["type"] == "missing":
        return f"{key} is {what}"
    value = err.get("input")
    return f"{key}={value}: {what}"


# ---------------------------------------------------------------- the command line
def override_problem(conf_dir: str, argv: list[str]) -> str | None:
    """Compose ``conf_dir``'s config with the overrides in ``argv`` (a sweep by its first value); one line
    for the first override Hydra would refuse, or None. Runs before Hydra prints its own lines."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException, OverrideParseException

    try:
        args = get_args_parser().parse_args(argv)
    except SystemExit:
        return None  # a bad flag: Hydra's own usage message is the right one
    if args.help or args.hydra_help or args.shell_completion or args.info or args.experimental_rerun \
            or args.config_path or args.config_name or args.config_dir:
        return None
    parser = OverridesParser.create()
    overrides, added = [], []
    for text in args.overrides:
        try:
            [o] = parser.parse_overrides([text])
        except OverrideParseException as e:
            return f"cannot read the override {text!r}: {str(e).splitlines()[0]}; quote values with brackets, " \
                   "commas or spaces, e.g. 'compose.size=[512,512]'"
        if o.is_sweep_override():
            try:
                text = f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}"
            except Exception:  # noqa: BLE001 - a glob sweep: Hydra checks it itself
                continue
        overrides.append(text)
        if o.is_add() and not o.key_or_group.startswith("hydra") and not _is_group(conf_dir, o.key_or_group):
            added.append((text, o.key_or_group))
    try:
        _compose(conf_dir, overrides)
    except HydraException as e:
        return _explain(conf_dir, overrides, e)
    return _unread_addition(conf_dir, overrides, added)


def _is_group(conf_dir: str, key: str) -> bool:
    """``+experiment=personalize`` adds a config group option (a file of the package's or the working
    directory's conf/), not a key."""
    return any((Path(root) / key.replace(".", "/")).is_dir() for root in (conf_dir, "conf"))


def _unread_addition(conf_dir: str, overrides: list[str], added: list[tuple[str, str]]) -> str | None:
    """``+key=value`` (Hydra's advice for a misspelled key) adds a key; under a backend node (one with a
    ``_target_``) that is a constructor argument, anywhere else nothing reads it: say so."""
    for text, key in added:
        parent, _, leaf = key.rpartition(".")
        try:
            base = _compose(conf_dir, [o for o in overrides if o not in {t for t, _ in added}])
        except Exception:  # noqa: BLE001 - the composition above succeeded with it; leave it to Hydra
            continue
        node = OmegaConf.select(base, parent) if parent else base
        # an empty mapping in the yaml (route.costs: {}) is the user's to fill: its keys are their names
        if isinstance(node, DictConfig) and "_target_" not in node and len(node):
            groups = [] if parent else [p.name for p in Path(conf_dir).iterdir() if p.is_dir() and p.name[0] != "_"]
            close = difflib.get_close_matches(leaf, [str(k) for k in node.keys()] + groups, n=1)
            hint = f"did you mean {f'{parent}.' if parent else ''}{close[0]}=...?" if close else \
                "`python -m gen4gen --cfg job` lists every key"
            return f"+{key} adds a key that gen4gen does not read; {hint}"
    return None


def _compose(conf_dir: str, overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
            return compose(config_name="config", overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


def _explain(conf_dir: str, overrides: list[str], e: Exception) -> str:
    from hydra.errors import MissingConfigException

    if isinstance(e, MissingConfigException) and e.missing_cfg_file and e.options:
        group, _, choice = str(e.missing_cfg_file).rpartition("/")
        close = difflib.get_close_matches(choice, list(e.options), n=1)
        hint = f" (did you mean {group}={close[0]}?)" if close else ""
        return f"{group}={choice}: no such {group}; choose one of {', '.join(sorted(e.options))}{hint}"
    m = re.search(r"Could not (?:override|append to|delete from) '([^']+)'", str(e))
    if m:
        key = m.group(1)
        parent, _, leaf = key.rpartition(".")
        try:
            base = _compose(conf_dir, [o for o in overrides if not o.lstrip("+~").startswith(f"{key}=")
                                       and o.lstrip("+~") != key])
            node = OmegaConf.select(base, parent) if parent else base
            known = [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []
        except Exception:  # noqa: BLE001 - another override is bad too: no suggestions then
            known = []
        if leaf in known:  # the key exists; its new value adds keys to a mapping (struct mode refuses that)
            return f"{key}: cannot take that value ({str(e).strip().splitlines()[0]}); add one key at a time " \
                   f"with +{key}.NAME=VALUE"
        close = difflib.get_close_matches(leaf, known, n=1)
        hint = f"did you mean {f'{parent}.' if parent else ''}{close[0]}?" if close else \
            "`python -m gen4gen --cfg job` lists every key"
        return f"unknown key {key}; {hint}"
    return str(e).strip().splitlines()[0]
