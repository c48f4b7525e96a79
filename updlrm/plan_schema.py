"""The plan document's JSON schema and its checker; :class:`PlanError`, what a bad plan raises.

``updlrm.plan`` re-exports all three; a plan file is checked against ``PLAN_SCHEMA``
before anything in it is used.
"""

from __future__ import annotations

import json

__all__ = ["PlanError", "PLAN_SCHEMA", "check_schema"]


class PlanError(ValueError):
    """A plan that does not fit its tables, workload, topology or capacity."""

    __module__ = "updlrm.plan"  # its public home (re-exported there); tracebacks name it so


# ---- the JSON document's schema -------------------------------------------------------
# A schema is a type name ("int", "number", "str", "bool", "any"), a dict of keys (a key
# starting with "?" is optional; other keys are refused), ("list", item), ("pair", item),
# ("map", value) for str keys, or ("nullable", schema).
_TABLE_SCHEMA = {
    "name": "str",
    "num_embeddings": "int",
    "embedding_dim": "int",
    "?row_format": "str",
    "?scale": "number",
    "?feature_names": ("list", "str"),
}
_SHARD_SCHEMA = {
    "table": "int",
    "dpu": "int",
    "cols": ("pair", "int"),
    "rows": {"?range": ("pair", "int"), "?array": "str", "?count": "int"},
}
PLAN_SCHEMA = {
    "format": "str",
    "version": "int",
    "tables": ("list", _TABLE_SCHEMA),
    "tables_hash": "str",
    "workload_hash": ("nullable", "str"),
    "topology": {"nr_dpus": "int", "?dpus_per_rank": "int", "?mram_bytes_per_dpu": "int"},
    "shards": ("list", _SHARD_SCHEMA),
    "host_rows": ("map", "str"),
    "expected_load": ("nullable", ("list", "number")),
    "?metadata": {"*": "any"},
    "arrays_file": "str",
    "arrays_sha256": "str",
    "placement_hash": "str",
}
_TYPES = {
    "int": ((int,), "an integer"),
    "number": ((int, float), "a number"),
    "str": ((str,), "a string"),
    "bool": ((bool,), "true or false"),
}


def check_schema(doc, schema=PLAN_SCHEMA, where: str = "") -> None:
    """Raise :class:`PlanError` naming the first key of ``doc`` that breaks ``schema``.

    >>> check_schema({"format": "updlrm-plan"})
    Traceback (most recent call last):
    ...
    updlrm.plan.PlanError: key "version" is missing
    >>> check_schema({"a": [1, "x"]}, {"a": ("list", "int")})
    Traceback (most recent call last):
    ...
    updlrm.plan.PlanError: "a[1]" must be an integer, got "x"
    """
    label = f'"{where}"' if where else "the document"
    if schema == "any":
        return
    if isinstance(schema, str):
        types, name = _TYPES[schema]
        if (isinstance(doc, bool) and schema != "bool") or not isinstance(doc, types):
            raise PlanError(f"{label} must be {name}, got {json.dumps(doc)[:40]}")
        return
    if isinstance(schema, dict):
        if not isinstance(doc, dict):
            raise PlanError(f"{label} must be an object, got {json.dumps(doc)[:40]}")
        if "*" in schema:
            return
        for key, sub in schema.items():
            name = key.lstrip("?")
            if name in doc:
                check_schema(doc[name], sub, f"{where}.{name}" if where else name)
            elif not key.startswith("?"):
                raise PlanError(f'key "{f"{where}." if where else ""}{name}" is missing')
        known = {k.lstrip("?") for k in schema}
        unknown = sorted(k for k in doc if k not in known)
        if unknown:
            raise PlanError(f'{label} has unknown key "{unknown[0]}" (known: {", ".join(sorted(known))})')
        return
    kind, sub = schema
    if kind == "nullable":
        if doc is not None:
            check_schema(doc, sub, where)
    elif kind in ("list", "pair"):
        if not isinstance(doc, list) or (kind == "pair" and len(doc) != 2):
            raise PlanError(
                f"{label} must be {'a list' if kind == 'list' else 'a list of two'}, got {json.dumps(doc)[:40]}"
            )
        for i, item in enumerate(doc):
            check_schema(item, sub, f"{where}[{i}]")
    elif kind == "map":
        if not isinstance(doc, dict):
            raise PlanError(f"{label} must be an object, got {json.dumps(doc)[:40]}")
        for key, item in doc.items():
            check_schema(item, sub, f"{where}.{key}")
    else:
        raise AssertionError(f"bad schema {schema!r}")
