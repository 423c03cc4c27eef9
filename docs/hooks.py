"""MkDocs hook: `::: pcavs.NAME` in a page documents the public name pcavs exports.

`import pcavs` loads its names lazily (`pcavs._NAMES`: name -> defining module), which static
analysis cannot follow; this hook points each block at the module that defines the name, so the
pages name only the public API and stay right when a module moves.
"""
from __future__ import annotations

import re

import pcavs

BLOCK = re.compile(r"^::: pcavs\.(\w+)[ \t]*$", re.MULTILINE)


def on_page_markdown(markdown: str, **_) -> str:
    def resolve(match: re.Match) -> str:
        name = match.group(1)
        module = pcavs._NAMES.get(name)
        if module is None:
            raise ValueError(f"pcavs exports no {name!r} (see pcavs/__init__.py)")
        return f"::: pcavs.{module}.{name}\n    options:\n      heading: pcavs.{name}\n      toc_label: pcavs.{name}"

    return BLOCK.sub(resolve, markdown)
