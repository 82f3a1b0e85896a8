"""Helpers shared by the command modules: wording, the ``--out`` convention, ``--set`` values."""

from __future__ import annotations

import argparse
import json


def _n(count: int, noun: str) -> str:
    """``1 case``, ``2 cases``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _out(parser, legacy: str, **kwargs) -> None:
    """The output option, named ``--out`` in every command (a file or a folder, as its help
    says); ``legacy`` is the earlier spelling, still accepted and not shown."""
    parser.add_argument("--out", dest="out", **kwargs)
    parser.add_argument(legacy, dest="out", help=argparse.SUPPRESS, default=kwargs.get("default"))


def _overrides(pairs) -> dict:
    """``["train#lr=0.001", "data#k=5"]`` -> ``{"train#lr": 0.001, "data#k": 5}``: JSON values
    where the text is JSON (numbers, lists, objects, true/false/null, quoted strings), else the
    text itself."""
    out = {}
    for kv in pairs or []:
        key, _, value = kv.partition("=")
        out[key] = json.loads(value) if value[:1] in "[{0123456789-tfn\"" and value not in ("", "-") else value
    return out


def _views(text: str) -> list[str]:
    """``--views axial,coronal`` -> ``["axial", "coronal"]`` (an argparse error names a wrong one)."""
    from brainseg3d.core.labels import as_views

    try:
        return as_views([v.strip().lower() for v in text.split(",") if v.strip()])
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{e} (from {text!r})") from None
