"""Build argparse options from config dataclasses, so defaults and help live in one place."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from typing import Any


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings (the string right after each field) of a dataclass and its bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:], strict=False):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)):
                docs[node.target.id] = " ".join(str(nxt.value.value).split())
    return docs


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(scalar type, optional) of an annotation such as ``int``, ``str | None``, ``tuple[int, ...]``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = (),
                       dest_prefix: str = "", defaults: dict[str, Any] | None = None) -> None:
    """Add ``--field-name`` options for every simple field of ``cls``.

    ``defaults`` replaces the dataclass defaults a command uses instead (e.g. distillation's
    optimisation settings), so ``--help`` shows the values that apply.
    """
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        tp, optional = _base_type(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        dest = dest_prefix + f.name
        default = f.default if f.default is not dataclasses.MISSING else None
        if defaults and f.name in defaults:
            default = defaults[f.name]
        help_text = docs.get(f.name, "")
        if tp is bool:
            parser.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction,
                                default=default, help=help_text)
        elif typing.get_origin(tp) is tuple:
            parser.add_argument(flag, dest=dest, type=typing.get_args(tp)[0], nargs="+",
                                default=default, help=f"{help_text} (default: {default})")
        elif tp in (int, float, str):
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            parser.add_argument(flag, dest=dest, type=tp, default=default, required=required,
                                help=f"{help_text} (default: {default})" if not required else help_text)
        # dicts and nested configs are set through dedicated options


def build_config(cls: type, namespace: argparse.Namespace, dest_prefix: str = "", **extra: Any):
    """Instantiate ``cls`` from parsed options (plus ``extra`` fields)."""
    values = {}
    for f in dataclasses.fields(cls):
        key = dest_prefix + f.name
        if hasattr(namespace, key) and getattr(namespace, key) is not None:
            values[f.name] = getattr(namespace, key)
    values.update(extra)
    return cls(**values)


def parse_assignments(items: list[str] | None) -> dict[str, Any]:
    """``["denoiser=unet", "horizon=16"]`` -> ``{"denoiser": "unet", "horizon": 16}``.

    Values are read as Python literals when they parse as one (numbers, tuples, booleans), else
    kept as strings.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set {item!r} is malformed; expected KEY=VALUE")
        key, raw = item.split("=", 1)
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        out[key.strip().replace("-", "_")] = value
    return out
