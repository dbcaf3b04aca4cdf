"""Is a new version of a contract compatible with the previous one?

Who relies on a contract: callers that submit jobs naming it (unpinned, they get the latest version) and read the
outputs the fleet vouches for. A new version is compatible when a caller written against the old one notices no
difference but additions. The rules:

1. Presence only grows.
   - A property the old version required stays required: "required field 'x' removed" is refused.
   - A property the old version described stays described: "optional property 'x' removed" is refused (it could
     come back holding anything), unless the new version's additionalProperties schema still says what it holds.
   - New properties may be added, optional or required, and an optional property may become required: callers
     ignore properties they do not know, and a newly required property is only a further guarantee (outputs
     validated under the new version always carry it).
2. The values of what exists are frozen, in both directions.
   - No narrowing: a type dropped (from a type list or an anyOf/oneOf), an enum value removed, a bound tightened
     (minimum raised, maxLength lowered, ...), a pattern / format / multipleOf / uniqueItems / enum added, or
     additionalProperties closed. Outputs the old version accepted, which callers' prompts and jobs were built
     around, would start failing validation: jobs that succeeded would fail.
   - No widening: a type added (e.g. 'null'), an enum value added, a bound loosened or removed, a pattern or format
     removed. Callers written for the old values would receive values they never had to handle.
   A type change ("string" to "integer") is both. Opening a closed object (additionalProperties false to true) is
   allowed by rule 1: callers never read properties they do not know.
3. The same rules apply all the way down: properties, additionalProperties, array items and prefixItems, anyOf /
   oneOf alternatives (paired by type, then by $ref name), and local $refs ($defs, as pydantic writes them).
   Recursive schemas terminate.
4. Any other keyword that changed (allOf, not, if/then/else, patternProperties, dependentSchemas, ...) is reported
   as a problem: this check does not prove it safe, so it does not assume it is. Annotations (title, description,
   default, examples, ...) never matter.

Each problem starts with the schema path where it happened ('properties.total', 'properties.lines.items.properties
.sku'; nothing at the root) and says what broke: "properties.total: type narrowed from ['number','string'] to
'number'", "required field 'customer_id' removed".
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway_core.contracts.models import CompatibilityVerdict
from gateway_core.contracts.validate import canonical, resolve_pointer

ANNOTATIONS = frozenset({
    "title", "description", "default", "examples", "$comment", "deprecated", "readOnly", "writeOnly", "$schema",
    "$id", "$defs", "definitions", "$anchor", "contentMediaType", "contentEncoding", "contentSchema", "discriminator",
})
NUMERIC = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"})
STRING = frozenset({"minLength", "maxLength", "pattern", "format"})
ARRAY = frozenset({"items", "prefixItems", "minItems", "maxItems", "uniqueItems"})
OBJECT = frozenset({"properties", "required", "additionalProperties", "minProperties", "maxProperties"})
HANDLED = NUMERIC | STRING | ARRAY | OBJECT | {"type", "enum", "const", "$ref"}
APPLIES: dict[str | None, frozenset[str]] = {
    "number": NUMERIC, "integer": NUMERIC, "string": STRING, "array": ARRAY, "object": OBJECT,
    "null": frozenset(), "boolean": frozenset(), None: NUMERIC | STRING | ARRAY | OBJECT,
}
MAX_DEPTH = 64
_ALTERNATIVES = ("anyOf", "oneOf")


def check_compatibility(old: dict[str, Any], new: dict[str, Any]) -> CompatibilityVerdict:
    """The verdict on replacing `old` by `new` for callers that rely on `old` (rules in this module's docstring)."""
    comparer = _Comparer(old, new)
    comparer.compare(old, new, "", 0)
    problems = list(dict.fromkeys(comparer.problems))
    return CompatibilityVerdict(compatible=not problems, problems=problems)


@dataclass
class _Branch:
    """One alternative of a schema, for one JSON type (None: any type)."""

    type: str | None
    schema: dict[str, Any]
    label: str | None


class _Comparer:
    def __init__(self, old_root: Any, new_root: Any) -> None:
        self.roots = (old_root, new_root)
        self.problems: list[str] = []
        self._active: set[tuple[str, str]] = set()

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}" if path else message)

    # --- one schema position ------------------------------------------------------------------------------------

    def compare(self, old: Any, new: Any, path: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            self.problem(path, "nested too deeply to check")
            return
        old_s, old_ref = self._resolve(old, 0, path)
        new_s, new_ref = self._resolve(new, 1, path)
        if canonical(old_s) == canonical(new_s):
            return
        if old_s is False or new_s is False:
            self.problem(path, "no longer allows any value" if new_s is False
                         else "now allows values where the old version allowed none")
            return
        key = (old_ref or f"id:{id(old_s)}", new_ref or f"id:{id(new_s)}")
        if key in self._active:  # a recursive schema came back to a pair already being compared
            return
        self._active.add(key)
        try:
            self._compare_alternatives(self._expand(old_s, old_ref, 0, path), self._expand(new_s, new_ref, 1, path),
                                       path, depth)
        finally:
            self._active.discard(key)

    def _resolve(self, schema: Any, side: int, path: str) -> tuple[Any, str | None]:
        """Follow local $refs (keeping sibling keywords); True becomes {}. Returns the schema and the first $ref."""
        first: str | None = None
        for _ in range(32):
            if not (isinstance(schema, dict) and isinstance(schema.get("$ref"), str)):
                break
            ref = schema["$ref"]
            first = first or ref
            target = resolve_pointer(self.roots[side], ref) if ref.startswith("#") else None
            if target is None:
                self.problem(path, f"cannot resolve $ref {ref!r} in the {('old', 'new')[side]} version")
                target = {}
            siblings = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **siblings} if siblings and isinstance(target, dict) else target
        if schema is True or not isinstance(schema, dict | bool):
            schema = {}
        return schema, first

    def _expand(self, schema: dict[str, Any], ref: str | None, side: int, path: str, depth: int = 0) -> list[_Branch]:
        """The schema as a union of single-type branches: anyOf/oneOf flattened, type lists split."""
        label = ref.rsplit("/", 1)[-1] if ref else schema.get("title")
        alternatives = _alternatives(schema) if depth < 8 else None
        if alternatives is not None:
            branches: list[_Branch] = []
            for alternative in alternatives:
                resolved, alt_ref = self._resolve(alternative, side, path)
                if resolved is False:
                    continue
                branches.extend(self._expand(resolved, alt_ref, side, path, depth + 1))
            return branches
        types = _types(schema)
        if types is None:
            return [_Branch(None, schema, label)]
        return [_Branch(t, schema, label) for t in types]

    def _compare_alternatives(self, old: list[_Branch], new: list[_Branch], path: str, depth: int) -> None:
        old_types, new_types = {b.type for b in old}, {b.type for b in new}
        if None in old_types and None not in new_types:
            self.problem(path, f"type restricted to {_fmt_types(new_types)} (the old version allowed any type)")
        elif None in new_types and None not in old_types:
            self.problem(path, f"type widened from {_fmt_types(old_types)} to any type")
        elif None not in old_types:
            lost = {t for t in old_types if not _covered(t, new_types)}
            gained = {t for t in new_types if not _covered(t, old_types)}
            change = "changed" if lost and gained else "narrowed" if lost else "widened" if gained else None
            if change:
                self.problem(path, f"type {change} from {_fmt_types(old_types)} to {_fmt_types(new_types)}")

        old_left, new_left = list(old), list(new)
        pairs: list[tuple[_Branch, _Branch]] = []

        def take(match: Callable[[_Branch, _Branch], bool]) -> None:
            for o in list(old_left):
                n = next((n for n in new_left if match(o, n)), None)
                if n is not None:
                    pairs.append((o, n))
                    old_left.remove(o)
                    new_left.remove(n)

        take(lambda o, n: o.type == n.type and o.label == n.label)
        take(lambda o, n: o.type == n.type)
        take(lambda o, n: {o.type, n.type} == {"integer", "number"})
        take(lambda o, n: o.type is None or n.type is None)
        for o in old_left:
            if _covered(o.type, new_types):  # a type still allowed, but this alternative of it is gone
                self.problem(path, f"alternative {_describe(o)} removed")
        for n in new_left:
            if _covered(n.type, old_types):
                self.problem(path, f"alternative {_describe(n)} added")
        for o, n in pairs:
            self._compare_branch(o, n, path, depth)

    # --- one pair of same-type branches ---------------------------------------------------------------------------

    def _compare_branch(self, old: _Branch, new: _Branch, path: str, depth: int) -> None:
        applies = APPLIES.get(old.type, frozenset()) | APPLIES.get(new.type, frozenset())
        o, n = old.schema, new.schema
        self._values(o, n, old, new, path)
        if applies & NUMERIC:
            self._numeric(o, n, path)
        if applies & STRING:
            self._count(o, n, "minLength", "maxLength", path)
            for keyword in ("pattern", "format"):
                self._exact(o, n, keyword, path)
        if applies & ARRAY:
            self._array(o, n, path, depth)
        if applies & OBJECT:
            self._object(o, n, path, depth)
        for keyword in sorted((set(o) | set(n)) - HANDLED - ANNOTATIONS):
            if canonical(o.get(keyword)) != canonical(n.get(keyword)):
                self.problem(path, f"{keyword!r} changed: this check cannot tell whether callers are affected")

    def _values(self, o: dict[str, Any], n: dict[str, Any], ob: _Branch, nb: _Branch, path: str) -> None:
        old_values, new_values = _enum(o, ob.type), _enum(n, nb.type)
        if old_values is None and new_values is None:
            return
        what = ob.type or "value"
        if old_values is None and new_values is not None:
            self.problem(path, f"values restricted to {_fmt_values(new_values)} (the old version allowed any {what})")
        elif new_values is None and old_values is not None:
            self.problem(path, f"enum removed: any {what} is now allowed (was {_fmt_values(old_values)})")
        elif old_values is not None and new_values is not None:
            old_keys, new_keys = {_value_key(v) for v in old_values}, {_value_key(v) for v in new_values}
            lost = [v for v in old_values if _value_key(v) not in new_keys]
            gained = [v for v in new_values if _value_key(v) not in old_keys]
            for values, verb in ((lost, "removed"), (gained, "added")):
                if values:
                    plural = "s" if len(values) > 1 else ""
                    self.problem(path, f"enum value{plural} {_fmt_values(values)} {verb}")

    def _numeric(self, o: dict[str, Any], n: dict[str, Any], path: str) -> None:
        for side in ("lower", "upper"):
            old_bound, new_bound = _bound(o, side), _bound(n, side)
            if old_bound == new_bound:
                continue
            if old_bound is None and new_bound is not None:
                self.problem(path, f"{new_bound[2]} {_num(new_bound[0])} added")
            elif new_bound is None and old_bound is not None:
                self.problem(path, f"{old_bound[2]} {_num(old_bound[0])} removed")
            elif old_bound is not None and new_bound is not None:
                tighter = _tighter(new_bound, old_bound, side)
                verb = "tightened" if tighter else "loosened"
                if old_bound[2] == new_bound[2]:
                    self.problem(path, f"{old_bound[2]} {verb} from {_num(old_bound[0])} to {_num(new_bound[0])}")
                else:
                    self.problem(path, f"{side} bound {verb} from {old_bound[2]} {_num(old_bound[0])} "
                                       f"to {new_bound[2]} {_num(new_bound[0])}")
        self._exact(o, n, "multipleOf", path)

    def _count(self, o: dict[str, Any], n: dict[str, Any], low: str, high: str, path: str) -> None:
        """minLength/maxLength, minItems/maxItems, minProperties/maxProperties (a minimum of 0 is no minimum)."""
        a, b = o.get(low) or 0, n.get(low) or 0
        if b > a:
            self.problem(path, f"{low} tightened from {a} to {b}" if a else f"{low} {b} added")
        elif b < a:
            self.problem(path, f"{low} loosened from {a} to {b}" if b else f"{low} {a} removed")
        x, y = o.get(high), n.get(high)
        if x == y:
            return
        if x is None:
            self.problem(path, f"{high} {y} added")
        elif y is None:
            self.problem(path, f"{high} {x} removed")
        else:
            self.problem(path, f"{high} {'tightened' if y < x else 'loosened'} from {x} to {y}")

    def _exact(self, o: dict[str, Any], n: dict[str, Any], keyword: str, path: str) -> None:
        a, b = o.get(keyword), n.get(keyword)
        if canonical(a) == canonical(b):
            return
        if a is None:
            self.problem(path, f"{keyword} {_short(b)} added")
        elif b is None:
            self.problem(path, f"{keyword} {_short(a)} removed")
        else:
            self.problem(path, f"{keyword} changed from {_short(a)} to {_short(b)}")

    def _array(self, o: dict[str, Any], n: dict[str, Any], path: str, depth: int) -> None:
        old_prefix, new_prefix = o.get("prefixItems") or [], n.get("prefixItems") or []
        old_items, new_items = o.get("items", True), n.get("items", True)
        for i in range(max(len(old_prefix), len(new_prefix))):
            a = old_prefix[i] if i < len(old_prefix) else old_items
            b = new_prefix[i] if i < len(new_prefix) else new_items
            self.compare(a, b, _join(path, f"prefixItems[{i}]"), depth + 1)
        if "items" in o or "items" in n:
            self.compare(old_items, new_items, _join(path, "items"), depth + 1)
        self._count(o, n, "minItems", "maxItems", path)
        if bool(o.get("uniqueItems")) != bool(n.get("uniqueItems")):
            self.problem(path, "uniqueItems added" if n.get("uniqueItems") else "uniqueItems removed")

    def _object(self, o: dict[str, Any], n: dict[str, Any], path: str, depth: int) -> None:
        old_props, new_props = _dict(o.get("properties")), _dict(n.get("properties"))
        old_req, new_req = set(_list(o.get("required"))), set(_list(n.get("required")))
        old_extra, new_extra = o.get("additionalProperties", True), n.get("additionalProperties", True)
        for name in sorted(old_req - new_req):
            self.problem(path, f"required field {name!r} removed")
        for name, schema in old_props.items():
            where = _join(path, f"properties.{name}")
            if name in new_props:
                self.compare(schema, new_props[name], where, depth + 1)
            elif name in old_req and name not in new_req:
                continue  # reported above
            elif new_extra is False:
                self.problem(path, f"property {name!r} removed: additionalProperties is false, so outputs that carry "
                                   "it are now refused")
            elif _is_any(new_extra):
                kind = "required property" if name in old_req else "optional property"
                self.problem(path, f"{kind} {name!r} removed: the new version no longer says what it holds")
            else:
                self.compare(schema, new_extra, where, depth + 1)
        if not _is_any(old_extra) and old_extra is not False:
            for name, schema in new_props.items():  # callers read every extra property by the old extra schema
                if name not in old_props:
                    self.compare(old_extra, schema, _join(path, f"properties.{name}"), depth + 1)
        if old_extra is not False:  # from closed, opening is fine: callers never read unknown properties
            if new_extra is False:
                self.problem(path, "additionalProperties closed: outputs with properties beyond those listed are "
                                   "now refused")
            elif not (_is_any(old_extra) and _is_any(new_extra)):
                self.compare(old_extra, new_extra, _join(path, "additionalProperties"), depth + 1)
        self._count(o, n, "minProperties", "maxProperties", path)


# --- helpers ----------------------------------------------------------------------------------------------------------


def _alternatives(schema: dict[str, Any]) -> list[Any] | None:
    """anyOf/oneOf alternatives when the schema is only that (plus annotations); allOf of one schema counts too."""
    for keyword in (*_ALTERNATIVES, "allOf"):
        found = schema.get(keyword)
        if not isinstance(found, list) or not found or (keyword == "allOf" and len(found) != 1):
            continue
        if all(k in ANNOTATIONS or k == keyword for k in schema):
            return found
    return None


def _types(schema: dict[str, Any]) -> list[str] | None:
    declared = schema.get("type")
    if isinstance(declared, str):
        return [declared]
    if isinstance(declared, list) and declared:
        return sorted({str(t) for t in declared})
    values = _enum(schema, None)
    if values is not None:
        return sorted({_json_type(v) for v in values})
    return None


def _enum(schema: dict[str, Any], branch_type: str | None) -> list[Any] | None:
    values: list[Any] | None = list(schema["enum"]) if isinstance(schema.get("enum"), list) else None
    if "const" in schema:
        const = _value_key(schema["const"])
        values = [schema["const"]] if values is None else [v for v in values if _value_key(v) == const]
    if values is None or branch_type is None:
        return values
    return [v for v in values if _covered(_json_type(v), {branch_type})]


def _covered(json_type: str | None, types: set[str | None]) -> bool:
    if None in types:
        return True
    return json_type in types or (json_type == "integer" and "number" in types)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value) and value.is_integer()):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _value_key(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    return canonical(value)


def _bound(schema: dict[str, Any], side: str) -> tuple[float, bool, str] | None:
    """The tightest lower or upper numeric bound: (value, exclusive, keyword)."""
    keywords = (("minimum", False), ("exclusiveMinimum", True)) if side == "lower" else \
        (("maximum", False), ("exclusiveMaximum", True))
    found = [(float(schema[k]), excl, k) for k, excl in keywords
             if isinstance(schema.get(k), int | float) and not isinstance(schema.get(k), bool)]
    if not found:
        return None
    best = found[0]
    for bound in found[1:]:
        if _tighter(bound, best, side):
            best = bound
    return best


def _tighter(a: tuple[float, bool, str], b: tuple[float, bool, str], side: str) -> bool:
    if a[0] != b[0]:
        return a[0] > b[0] if side == "lower" else a[0] < b[0]
    return a[1] and not b[1]


def _num(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def _is_any(schema: Any) -> bool:
    return schema is True or schema == {}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _join(path: str, part: str) -> str:
    return f"{path}.{part}" if path else part


def _fmt_types(types: set[str | None]) -> str:
    names = sorted(t for t in types if t is not None)
    if len(names) == 1:
        return f"'{names[0]}'"
    return "[" + ",".join(f"'{t}'" for t in names) + "]"


def _fmt_values(values: list[Any], limit: int = 10) -> str:
    shown = ", ".join(_short(v, 60) for v in values[:limit])
    return shown + (f" (and {len(values) - limit} more)" if len(values) > limit else "")


def _short(value: Any, width: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _describe(branch: _Branch) -> str:
    if branch.label:
        return f"{branch.label!r} ({branch.type or 'any type'})"
    return f"of type {branch.type!r}" if branch.type else "of any type"
