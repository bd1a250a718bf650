"""Schema evolution rules (Avro schema resolution), as a pure function over schema JSON.

`incompatibilities(writer, reader)` lists why data written with `writer` cannot be read
with `reader`; an empty list means it can. FULL_TRANSITIVE compatibility of a subject is
this check in both directions for every pair of its versions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_PROMOTIONS: dict[str, set[str]] = {
    "int": {"long", "float", "double"},
    "long": {"float", "double"},
    "float": {"double"},
    "string": {"bytes"},
    "bytes": {"string"},
}
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


@dataclass(frozen=True)
class Incompatibility:
    path: str  # where in the schema, e.g. "ConversationEvent.data.closedAt"
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def full_name(schema: Any, namespace: str | None = None) -> str | None:
    """The full name of a named schema (JSON; `namespace`: the enclosing one), or None."""
    if not isinstance(schema, Mapping) or not isinstance(schema.get("name"), str):
        return None
    name: str = schema["name"]
    if "." in name:
        return name
    ns = schema.get("namespace", namespace)
    return f"{ns}.{name}" if ns else name


def aliases(full: str, schema: Mapping[str, Any]) -> set[str]:
    """A named type's aliases as full names (relative ones in the type's own namespace)."""
    ns = full.rsplit(".", 1)[0] if "." in full else None
    return {a if "." in a or not ns else f"{ns}.{a}" for a in map(str, schema.get("aliases", []))}


def named_types(schema: Any, namespace: str | None = None) -> dict[str, Mapping[str, Any]]:
    """Every named type (record, enum, fixed) defined in a schema (JSON), by full name."""
    found: dict[str, Mapping[str, Any]] = {}
    if isinstance(schema, list):
        for branch in schema:
            found.update(named_types(branch, namespace))
    elif isinstance(schema, Mapping):
        full = full_name(schema, namespace)
        if full is not None and schema.get("type") in ("record", "error", "enum", "fixed"):
            found[full] = schema
            namespace = full.rsplit(".", 1)[0] if "." in full else None
        for f in schema.get("fields", []) if schema.get("type") in ("record", "error") else []:
            found.update(named_types(f.get("type"), namespace))
        for key in ("items", "values"):
            if key in schema:
                found.update(named_types(schema[key], namespace))
        if isinstance(schema.get("type"), (Mapping, list)):
            found.update(named_types(schema["type"], namespace))
    return found


class _Resolver:
    """Walks writer and reader together, expanding named-type references on each side."""

    def __init__(self) -> None:
        self.names: dict[str, dict[str, dict[str, Any]]] = {"w": {}, "r": {}}
        self.problems: list[Incompatibility] = []
        self._seen: set[tuple[str, str]] = set()

    def _norm(self, side: str, schema: Any, ns: str | None) -> tuple[Any, str | None]:
        """Return (schema as dict or list, namespace), registering/expanding named types."""
        if isinstance(schema, str):
            if schema in _PRIMITIVES:
                return {"type": schema}, ns
            full = schema if "." in schema or not ns else f"{ns}.{schema}"
            table = self.names[side]
            found = table.get(full) or table.get(schema)
            if found is None:
                raise ValueError(f"unknown named type {schema!r}")
            return found, found.get("__ns")
        if isinstance(schema, list):
            return schema, ns
        if isinstance(schema.get("type"), (dict, list)):
            return self._norm(side, schema["type"], ns)
        if schema.get("type") in ("record", "error", "enum", "fixed"):
            full = full_name(schema, ns) or str(schema.get("name"))
            own_ns = full.rsplit(".", 1)[0] if "." in full else None
            schema = {**schema, "__full": full, "__ns": own_ns}
            self.names[side][full] = schema
            return schema, own_ns
        return schema, ns

    def check(self, w: Any, wns: str | None, r: Any, rns: str | None, path: str) -> bool:
        w, wns = self._norm("w", w, wns)
        r, rns = self._norm("r", r, rns)
        if isinstance(r, list):
            if isinstance(w, list):
                ok = True
                for branch in w:
                    ok &= self._match_union(branch, wns, r, rns, path)
                return ok
            return self._match_union(w, wns, r, rns, path)
        if isinstance(w, list):
            ok = True
            for branch in w:
                ok &= self.check(branch, wns, r, rns, path)
            return ok
        wt, rt = w["type"], r["type"]
        if wt != rt and rt not in _PROMOTIONS.get(wt, set()):
            return self._fail(path, f"writer type {wt} cannot be read as {rt}")
        if wt == "record":
            return self._record(w, wns, r, rns, path)
        if wt == "enum":
            missing = [s for s in w["symbols"] if s not in r["symbols"]]
            if missing and "default" not in r:
                return self._fail(path, f"enum symbols {missing} unknown to reader, no default")
        if wt == "fixed" and w["size"] != r["size"]:
            return self._fail(path, f"fixed size {w['size']} vs {r['size']}")
        if wt == "array":
            return self.check(w["items"], wns, r["items"], rns, f"{path}[]")
        if wt == "map":
            return self.check(w["values"], wns, r["values"], rns, f"{path}{{}}")
        return True

    def _match_union(self, w: Any, wns: str | None, r: list[Any], rns: str | None, path: str) -> bool:
        trial = _Resolver()
        trial.names = {k: dict(v) for k, v in self.names.items()}
        for branch in r:
            trial.problems = []
            if trial.check(w, wns, branch, rns, path):
                return True
        wn, _ = self._norm("w", w, wns)
        label = wn.get("__full", wn.get("type")) if isinstance(wn, dict) else "union"
        return self._fail(path, f"writer branch {label} matches no branch of the reader union")

    def _record(
        self, w: dict[str, Any], wns: str | None, r: dict[str, Any], rns: str | None, path: str
    ) -> bool:
        wname, rname = w["__full"], r["__full"]
        if (
            wname != rname
            and wname not in aliases(rname, r)
            and wname.rsplit(".", 1)[-1] != rname.rsplit(".", 1)[-1]
        ):
            return self._fail(path, f"record {wname} cannot be read as {rname}")
        if (wname, rname) in self._seen:
            return True
        self._seen.add((wname, rname))
        wfields = {f["name"]: f for f in w["fields"]}
        ok = True
        for rf in r["fields"]:
            names = [rf["name"], *rf.get("aliases", [])]
            wf = next((wfields[n] for n in names if n in wfields), None)
            fpath = f"{path}.{rf['name']}"
            if wf is None:
                if "default" not in rf:
                    ok = self._fail(fpath, "reader field is missing from the writer and has no default")
                continue
            ok &= self.check(wf["type"], w["__ns"], rf["type"], r["__ns"], fpath)
        return ok

    def _fail(self, path: str, reason: str) -> bool:
        self.problems.append(Incompatibility(path, reason))
        return False


def incompatibilities(writer: Any, reader: Any) -> list[Incompatibility]:
    """Why data written with `writer` cannot be resolved by `reader` (empty: it can)."""
    resolver = _Resolver()
    root = writer.get("name", "root") if isinstance(writer, dict) else "root"
    resolver.check(writer, None, reader, None, str(root))
    return resolver.problems
