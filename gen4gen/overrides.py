"""The command line, checked before Hydra sees it: the config composed with the overrides as Hydra is about to,
and an unknown key, an unknown group option or a syntax error turned into one line with close matches (Hydra's
own 7-13 lines suggest ``+key=value``, which only adds a key nothing reads)."""
from __future__ import annotations

import difflib
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

# Hydra's command-line flags (https://hydra.cc/docs/advanced/hydra-command-line-flags/): those that take a value,
# and those after which Hydra shows something or reads another config instead of running ours
VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir",
               "-cd", "--experimental-rerun"}
SWITCHES = {"--resolve", "--run", "-r", "--multirun", "-m"}
NOT_A_RUN = {"--help", "-h", "--hydra-help", "--version", "--shell-completion", "-sc", "--info", "-i",
             "--experimental-rerun", "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd"}


def command_overrides(argv: list[str]) -> list[str] | None:
    """The overrides of a command line that runs (or prints) our config; None when Hydra should answer it alone
    (help, another config, a flag it does not know: its own usage message is the right one)."""
    overrides, k = [], 0
    while k < len(argv):
        arg = argv[k]
        flag = arg.split("=", 1)[0]
        if flag in NOT_A_RUN or (arg.startswith("-") and flag not in VALUE_FLAGS | SWITCHES):
            return None
        if flag in VALUE_FLAGS and "=" not in arg:
            k += 1  # its value
        elif not arg.startswith("-"):
            overrides.append(arg)
        k += 1
    return overrides


def override_problem(conf_dir: str, argv: list[str]) -> str | None:
    """Compose ``conf_dir``'s config with the overrides in ``argv`` (a sweep by its first value); one line
    for the first override Hydra would refuse, or None. Runs before Hydra prints its own lines."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException, OverrideParseException

    given = command_overrides(argv)
    if given is None:
        return None
    parser = OverridesParser.create()
    overrides, added = [], []
    for text in given:
        try:
            [o] = parser.parse_overrides([text])
        except OverrideParseException as e:
            key, _, value = text.partition("=")
            if not value.isascii():  # Hydra reads unquoted values in Latin letters only: "草地", "café"
                return f"cannot read the override {text!r}: a value with letters outside a-z needs quotes inside " \
                       f"the override: \"{key}='{value}'\""
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
