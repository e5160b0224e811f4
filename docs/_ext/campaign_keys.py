"""The campaign-file reference as Markdown, from the pydantic models in ``impeccable/config.py``.

One table per TOML section: every key with its type, default, bounds and the comment written beside it in
``config.py`` (the models are the truth; the page cannot drift from them). Checks that span keys are listed from
the ``ValueError`` messages of each model validator. Types, defaults and bounds come from pydantic's
``model_fields``; comments and validator messages from the source with ``ast`` and ``tokenize`` (pydantic does not
keep ``#`` comments). Needs no Sphinx: ``tests/test_docs.py`` checks it without the docs extra.
"""

from __future__ import annotations

import ast
import io
import tokenize
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

BOUNDS = {
    "ge": ">= {}",
    "gt": "> {}",
    "le": "<= {}",
    "lt": "< {}",
    "min_length": "at least {} characters",
    "max_length": "at most {} items",
    "pattern": "matches `{}`",
}


def reference_markdown(root: type[BaseModel], source: Path) -> str:
    """Markdown for ``root`` and every section model under it, in the order the file declares them."""
    comments, checks = _field_comments(source), _validator_messages(source)
    sections = _sections(root)
    out: list[str] = []
    for path, model in [*sections[1:], sections[0]]:  # the root's own checks (across sections) come last
        out += _section(path, model, comments, checks)
    return "\n".join(out)


def options_markdown(models: dict[str, type[BaseModel]], source: Path, prefix: str = "pilot.options") -> str:
    """Markdown for each backend's options model (``runtime/backends/options.py``), as ``[prefix.NAME]``."""
    comments, checks = _field_comments(source), _validator_messages(source)
    return "\n".join(
        line for name, model in models.items() for line in _section(f"{prefix}.{name}", model, comments, checks)
    )


def _section(path: str, model: type[BaseModel], comments: dict, checks: dict) -> list[str]:
    """One section's heading, docstring, table of keys and checks across its keys."""
    out = [f"### `[{path}]`" if path else "### Checks across sections"]
    if model.__doc__:  # the section's own docstring (a class's __doc__ is not inherited)
        out += ["", " ".join(model.__doc__.split())]
    rows = [(n, f) for n, f in model.model_fields.items() if not f.exclude and not _is_section(f.annotation)]
    if rows:
        out += ["", "| key | type | default | allowed | what it does |", "|---|---|---|---|---|"]
        for name, field in rows:
            what = comments.get((model.__name__, name), "")
            cells = (f"`{field.alias or name}`", _type_name(field.annotation), _default(field), _bounds(field), what)
            out.append("| " + " | ".join(_cell(x) for x in cells) + " |")
    for message in checks.get(model.__name__, []):
        out += ["", f"Checked across keys: {_text(message)}"]
    return [*out, ""]


def _sections(model: type[BaseModel], path: str = "") -> list[tuple[str, type[BaseModel]]]:
    found = [(path, model)]
    for name, field in model.model_fields.items():
        if _is_section(field.annotation):
            found += _sections(field.annotation, f"{path}.{name}" if path else name)
    return found


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _type_name(annotation: Any) -> str:
    """The TOML-facing name of a field's type: integer, float, string, path, list of strings, one of ..."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        parts = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" (optional)" if type(None) in args else "")
    if origin is typing.Literal:
        return "one of " + ", ".join(f'`"{a}"`' for a in args)
    if origin in (list, tuple):
        return f"list of {_type_name(args[0])}s"
    if origin is dict:
        return f"table: {_type_name(args[0])} -> {_type_name(args[1])}"
    names = {int: "integer", float: "float", str: "string", bool: "boolean", Path: "path", Any: "any value"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _default(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if value is None:
        return "none"
    return "`" + _toml(value) + "`"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


def _bounds(field: Any) -> str:
    """Bounds from the field's constraints, also those inside an Annotated member of a union, and the
    docstrings of its AfterValidator functions."""
    found: list[str] = []

    def collect(metadata: list[Any]) -> None:
        for item in metadata:
            for key, template in BOUNDS.items():
                value = getattr(item, key, None)
                if value is not None:
                    found.append("not empty" if (key, value) == ("min_length", 1) else template.format(value))
            if hasattr(item, "metadata") and isinstance(item.metadata, list):
                collect(item.metadata)
            func = getattr(item, "func", None)
            if func is not None and func.__doc__:
                found.append(" ".join(func.__doc__.split()))

    def walk(annotation: Any) -> None:
        if typing.get_origin(annotation) is typing.Annotated:
            collect(list(annotation.__metadata__))
        for arg in typing.get_args(annotation):
            walk(arg)

    collect(list(field.metadata))
    walk(field.annotation)
    return "; ".join(dict.fromkeys(found))


def _cell(text: str) -> str:
    return _text(text).replace("|", "\\|").replace("\n", " ")


def _text(text: str) -> str:
    """``<`` outside code spans as an entity, so that ``runs/<name>`` is not read as an HTML tag."""
    parts = text.split("`")
    return "`".join(part if i % 2 else part.replace("<", "&lt;") for i, part in enumerate(parts))


def _field_comments(source: Path) -> dict[tuple[str, str], str]:
    """(class, field) -> the comment lines right above the field and the comment at the end of its statement."""
    text = source.read_text()
    trailing: dict[int, str] = {}
    own_line: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT:
            body = tok.string.lstrip("#").strip()
            (own_line if tok.line.strip().startswith("#") else trailing)[tok.start[0]] = body
    out: dict[tuple[str, str], str] = {}
    for cls in ast.walk(ast.parse(text)):
        if not isinstance(cls, ast.ClassDef):
            continue
        for stmt in cls.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                above, line = [], stmt.lineno - 1
                while line in own_line:
                    above.insert(0, own_line[line])
                    line -= 1
                after = [trailing[n] for n in range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1) if n in trailing]
                out[(cls.name, stmt.target.id)] = " ".join([*above, *after])
    return out


def _validator_messages(source: Path) -> dict[str, list[str]]:
    """Class -> the messages its model validators raise (a check across keys), f-string fields as ``{...}``."""
    out: dict[str, list[str]] = {}
    for cls in ast.walk(ast.parse(source.read_text())):
        if not isinstance(cls, ast.ClassDef):
            continue
        for fn in cls.body:
            if not isinstance(fn, ast.FunctionDef) or not any(
                isinstance(d, ast.Call) and getattr(d.func, "id", "") == "model_validator" for d in fn.decorator_list
            ):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args:
                    out.setdefault(cls.name, []).append(_message(node.exc.args[0]))
    return out


def _message(node: ast.expr) -> str:
    if isinstance(node, ast.Constant):
        return str(node.value)
    if isinstance(node, ast.JoinedStr):  # a named value reads <name>, an expression "..."
        return "".join(
            str(v.value)
            if isinstance(v, ast.Constant)
            else f"<{v.value.id}>"
            if isinstance(v.value, ast.Name)
            else "..."
            for v in node.values
        )
    return ast.unparse(node)
