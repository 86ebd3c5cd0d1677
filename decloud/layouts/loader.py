"""Reading layouts from files: decloud's YAML, and CNES decloud's JSON.

Every problem is raised as :class:`~decloud.errors.LayoutError` naming the file
(``path``), the field as a dotted path (``field``) and, first in the message, the
1-based line: ``line 12: cloud bound 120 is outside [0, 100]``.

YAML lines come from the node tree of ``yaml.compose``: the pydantic error location is
walked through it (mappings by key, sequences by index) as far as it goes, and the line
is that of the last key or item reached, so an unknown key points at itself and a
missing one at its parent.

JSON lines are best effort: the keys of the JSON path are searched for one after the
other in the text (``"t-1"``, then ``"acquisition"`` after it, ...), which finds the
right line in files laid out like CNES decloud's but can be fooled by a key that
also appears as a string value earlier in the file.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from decloud.errors import LayoutError
from decloud.layouts.model import (
    Acquisition,
    Layout,
    LocatedValueError,
    RandInt,
    S1Spec,
    S2Spec,
)

__all__ = ["SHIPPED_LAYOUTS", "load_layout", "shipped_layouts"]

#: The layouts shipped with decloud: package data of ``decloud.layouts`` (the
#: repository's top-level ``acquisition_layouts/`` folder links there).
SHIPPED_LAYOUTS: Traversable = resources.files("decloud.layouts").joinpath("shipped")

Loc = tuple[str | int, ...]

#: Every field name a layout can hold, to suggest the intended one for a typo.
_FIELDS = sorted({
    name
    for model in (Layout, Acquisition, S2Spec, S1Spec, RandInt)
    for name in model.model_fields
} | {"min", "max"})

#: The one CNES decloud expression accepted for a random cloud bound; never evaluated.
_CNES_RANDINT = re.compile(r"random\.randint\(\s*(\d{1,3})\s*,\s*(\d{1,3})\s*\)")

_CNES_STEP_KEYS = ("acquisition", "max_s1s2_gap_hours", "timeframe_origin",
                   "timeframe_start_hours", "timeframe_end_hours")
_CNES_SENSOR_KEYS = {"S2": ("type", "min_cloud_percent", "max_cloud_percent"),
                     "S1": ("type",)}
_CNES_TRUE = (True, "True", "true")
_CNES_FALSE = (False, "False", "false")


def shipped_layouts() -> list[str]:
    """The names of the shipped layouts (``os2-occitanie``, ...), sorted.

    Raises:
        LayoutError: The package data folder is missing (a broken installation).
    """
    if not SHIPPED_LAYOUTS.is_dir():
        raise LayoutError("no shipped layouts folder", path=Path(str(SHIPPED_LAYOUTS)))
    return sorted(r.name.removesuffix(".yaml") for r in SHIPPED_LAYOUTS.iterdir()
                  if r.is_file() and r.name.endswith(".yaml"))


def load_layout(path: str | Path) -> Layout:
    """Read and validate an acquisition layout.

    Args:
        path: A ``.yaml``/``.yml`` file in decloud's format, a ``.json`` file in
            CNES decloud's format (named after the file stem, without DEM), or the
            name of a shipped layout (``os2-occitanie``: see :func:`shipped_layouts`).

    Returns:
        The layout, with ``source`` set to its file.

    Raises:
        LayoutError: The file is missing, unreadable or not a valid layout, or the
            name is not a shipped layout; the message starts with the line
            (``line N: ...``) where there is one.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not suffix:
        # No extension: a shipped layout's name (a file always has one).
        resource = SHIPPED_LAYOUTS.joinpath(f"{path}.yaml")
        if path.name == str(path) and resource.is_file():
            with resources.as_file(resource) as real:
                return load_layout(real)
        raise LayoutError("neither a layout file (.yaml, .yml, or .json for CNES decloud) "
                          f"nor a shipped layout ({', '.join(shipped_layouts())})", path=path)
    if suffix not in (".yaml", ".yml", ".json"):
        raise LayoutError("unknown layout format: use .yaml, .yml or .json (CNES decloud)",
                          path=path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise LayoutError("layout file not found", path=path) from err
    except (OSError, UnicodeDecodeError) as err:
        raise LayoutError(f"cannot read the layout ({err})", path=path) from err
    layout = _from_cnes_json(text, path) if suffix == ".json" else _from_yaml(text, path)
    return layout.model_copy(update={"source": str(path)})


def _at(line: int, message: str) -> str:
    return f"line {line}: {message}"


def _dotted(loc: Loc) -> str:
    return ".".join(str(part) for part in loc)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _problem(err: ValidationError) -> tuple[Loc, str]:
    """Location and message of the first problem pydantic found."""
    errors = err.errors()
    first = errors[0]
    loc: Loc = tuple(first["loc"])
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, LocatedValueError):
        loc += cause.loc
        message = str(cause)
    elif isinstance(cause, Exception):
        message = str(cause)
    elif first["type"] == "extra_forbidden":
        key = str(loc[-1])
        close = difflib.get_close_matches(key, _FIELDS, n=1)
        message = f"unknown field {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
    elif first["type"] == "missing":
        message = f"missing required field {loc[-1]!r}"
    else:
        message = f"{first['msg']} (got {_short(first['input'])})"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem(s))"
    return loc, message


def _validate(
    data: dict[str, Any], path: Path, where: Callable[[Loc], tuple[int, str]]
) -> Layout:
    """Validate ``data``; ``where(loc)`` gives (line, field) of a problem."""
    try:
        return Layout.model_validate(data)
    except ValidationError as err:
        loc, message = _problem(err)
        line, field = where(loc)
        raise LayoutError(_at(line, message), path=path, field=field) from err


# ----------------------------------------------------------------------------- YAML


def _yaml_line(root: yaml.Node, loc: Loc) -> int:
    """Line of the deepest node of ``loc`` found in the tree (see the module doc)."""
    node, line = root, root.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            keys = {k.value for k, _ in node.value if isinstance(k, yaml.ScalarNode)}
            key: str | int = part
            # cloud written {min: .., max: ..}: pydantic speaks of items 0 and 1.
            if isinstance(part, int) and part in (0, 1) and keys & {"min", "max"}:
                key = ("min", "max")[part]
            match = next(((k, v) for k, v in node.value
                          if isinstance(k, yaml.ScalarNode) and k.value == str(key)), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif (isinstance(node, yaml.SequenceNode) and isinstance(part, int)
              and 0 <= part < len(node.value)):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _duplicate_key(node: yaml.Node, loc: Loc = ()) -> tuple[Loc, int] | None:
    """The first key written twice in a mapping (PyYAML would silently keep the last)."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    return (*loc, key.value), key.start_mark.line + 1
                seen.add(key.value)
                found = _duplicate_key(value, (*loc, key.value))
                if found:
                    return found
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found = _duplicate_key(item, (*loc, i))
            if found:
                return found
    return None


def _from_yaml(text: str, path: Path) -> Layout:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise LayoutError(_at(line, f"invalid YAML: {err.problem or err}"), path=path) from err
    except yaml.YAMLError as err:
        raise LayoutError(f"invalid YAML: {err}", path=path) from err
    if root is None or not isinstance(data, dict):
        line = 1 if root is None else root.start_mark.line + 1
        raise LayoutError(_at(line, "a layout is a YAML mapping (name, acquisitions, ...)"),
                          path=path)
    duplicate = _duplicate_key(root)
    if duplicate is not None:
        loc, line = duplicate
        raise LayoutError(_at(line, f"key {loc[-1]!r} is written twice"), path=path,
                          field=_dotted(loc))
    return _validate(data, path, lambda loc: (_yaml_line(root, loc), _dotted(loc)))


# ----------------------------------------------------------------------------- JSON


def _json_line(text: str, keys: Loc) -> int:
    """Line of the last key of ``keys`` found by searching them in turn (best effort)."""
    pos = 0
    for key in keys:
        if not isinstance(key, str):
            continue  # list indices cannot be searched for
        found = text.find(json.dumps(key, ensure_ascii=False), pos)
        if found < 0:
            break
        pos = found
    return text.count("\n", 0, pos) + 1


def _cnes_name(name: str) -> str:
    """Decloud name of a CNES acquisition name: ``t-1`` -> ``tm1``, ``t+1`` -> ``tp1``."""
    return name.strip().lower().replace("-", "m").replace("+", "p")


class _CnesImport:
    """Converts a CNES decloud JSON layout to decloud's data, remembering where from.

    ``where`` maps decloud locations (``("acquisitions", "tm1", "s2", "cloud", 0)``)
    to JSON key paths (``("t-1", "acquisition", "S2", "min_cloud_percent")``).
    """

    def __init__(self, text: str, path: Path) -> None:
        self.text = text
        self.path = path
        self.where: dict[Loc, Loc] = {}

    def fail(self, json_path: Loc, message: str) -> LayoutError:
        return LayoutError(_at(_json_line(self.text, json_path), message), path=self.path,
                           field=_dotted(json_path))

    def locate(self, loc: Loc) -> tuple[int, str]:
        """Line and field of a decloud location: its longest recorded prefix."""
        for n in range(len(loc), 0, -1):
            json_path = self.where.get(loc[:n])
            if json_path is not None:
                return _json_line(self.text, json_path), _dotted(json_path)
        return 1, _dotted(loc)

    def bound(self, value: Any, json_path: Loc) -> Any:
        if not isinstance(value, str):
            return value  # numbers, and anything else for the model to reject
        match = _CNES_RANDINT.fullmatch(value.strip())
        if match is None:
            raise self.fail(json_path, f"unsupported cloud bound {_short(value)}: a number or "
                                       "'random.randint(a, b)'")
        return {"randint": [int(match[1]), int(match[2])]}

    def sensors(self, name: str, raw: Any, json_path: Loc) -> dict[str, Any]:
        if not isinstance(raw, dict) or not raw:
            raise self.fail(json_path, 'acquisition is an object of sensors ({"S2": {...}})')
        out: dict[str, Any] = {}
        for key, spec in raw.items():
            where = (*json_path, key)
            if not isinstance(spec, dict):
                raise self.fail(where, 'a sensor is an object ({"type": "S2", ...})')
            kind: Any = spec.get("type", key)
            allowed = _CNES_SENSOR_KEYS.get(kind) if isinstance(kind, str) else None
            if not isinstance(kind, str) or allowed is None:
                raise self.fail((*where, "type"), f"unknown sensor type {_short(kind)}: S1 or S2")
            for field in spec:
                if field not in allowed:
                    raise self.fail((*where, field), f"unknown field {field!r} for {kind}")
            sensor = kind.lower()
            if sensor in out:
                raise self.fail(where, f"{kind} is given twice")
            base: Loc = ("acquisitions", name, sensor)
            self.where[base] = where
            if kind == "S2":
                # CNES decloud's defaults when a bound is missing: 0 for both.
                low_path, high_path = (*where, "min_cloud_percent"), (*where, "max_cloud_percent")
                cloud = [self.bound(spec.get("min_cloud_percent", 0), low_path),
                         self.bound(spec.get("max_cloud_percent", 0), high_path)]
                self.where[(*base, "cloud", 0)] = low_path
                self.where[(*base, "cloud", 1)] = high_path
                out["s2"] = {"cloud": cloud}
            else:
                out["s1"] = {}
        return out

    def step(self, raw_name: str, raw: Any) -> tuple[str, dict[str, Any]]:
        json_path: Loc = (raw_name,)
        name = _cnes_name(raw_name)
        if not isinstance(raw, dict):
            raise self.fail(json_path, "an acquisition is an object")
        for field in raw:
            if field not in _CNES_STEP_KEYS:
                raise self.fail((*json_path, field), f"unknown field {field!r} "
                                                     f"(expected {', '.join(_CNES_STEP_KEYS)})")
        self.where[("acquisitions", name)] = json_path
        if "acquisition" not in raw:
            raise self.fail(json_path, "missing field 'acquisition'")
        acq = self.sensors(name, raw["acquisition"], (*json_path, "acquisition"))
        if "max_s1s2_gap_hours" in raw and "s1" in acq:
            acq["s1"]["max_gap_hours"] = raw["max_s1s2_gap_hours"]
            self.where[("acquisitions", name, "s1", "max_gap_hours")] = (
                *json_path, "max_s1s2_gap_hours")
        origin = raw.get("timeframe_origin", False)
        if origin not in _CNES_TRUE and origin not in _CNES_FALSE:
            raise self.fail((*json_path, "timeframe_origin"),
                            f"timeframe_origin is \"True\" or \"False\", not {_short(origin)}")
        acq["reference"] = origin in _CNES_TRUE
        self.where[("acquisitions", name, "reference")] = (*json_path, "timeframe_origin")
        start, end = raw.get("timeframe_start_hours"), raw.get("timeframe_end_hours")
        if start is not None or end is not None:
            window = [0 if start is None else start, 0 if end is None else end]
            # CNES decloud orders the two ends (min, max); so does the import.
            if all(isinstance(v, int | float) and not isinstance(v, bool) for v in window):
                window.sort()
            acq["window_hours"] = window
            first = "timeframe_start_hours" if start is not None else "timeframe_end_hours"
            self.where[("acquisitions", name, "window_hours")] = (*json_path, first)
        return name, acq

    def options(self, raw: Any) -> Any:
        if not isinstance(raw, dict):
            raise self.fail(("options",), 'options is an object ({"siblings": [[...]]})')
        for field in raw:
            if field != "siblings":
                raise self.fail(("options", field), f"unknown option {field!r} (siblings)")
        siblings = raw.get("siblings", [])
        self.where[("siblings",)] = ("options", "siblings")
        if not isinstance(siblings, list):
            return siblings  # for the model to reject
        out: list[Any] = []
        for g, group in enumerate(siblings):
            if isinstance(group, list):
                for m in range(len(group)):
                    # Located at the "siblings" key: list items cannot be searched for.
                    self.where[("siblings", g, m)] = ("options", "siblings", g, m)
                group = [_cnes_name(m) if isinstance(m, str) else m for m in group]
            out.append(group)
        return out

    def convert(self, raw: dict[str, Any]) -> dict[str, Any]:
        acquisitions: dict[str, Any] = {}
        data: dict[str, Any] = {"name": self.path.stem, "acquisitions": acquisitions}
        for raw_name, step in raw.items():
            if raw_name == "options":
                data["siblings"] = self.options(step)
                continue
            name, acq = self.step(raw_name, step)
            if name in acquisitions:
                raise self.fail((raw_name,), f"{raw_name!r} and another acquisition both "
                                             f"become {name!r}")
            acquisitions[name] = acq
        return data


def _from_cnes_json(text: str, path: Path) -> Layout:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise LayoutError(_at(err.lineno, f"invalid JSON: {err.msg}"), path=path) from err
    if not isinstance(raw, dict):
        raise LayoutError(_at(1, "a CNES decloud layout is a JSON object of acquisitions"),
                          path=path)
    cnes = _CnesImport(text, path)
    return _validate(cnes.convert(raw), path, cnes.locate)
