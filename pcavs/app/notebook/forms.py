"""The job's options as dropdowns, each built from its `Options` field."""
from __future__ import annotations

import html
from dataclasses import fields
from typing import Any, Iterable

from ...core.options import Options

SHOWN_OPTIONS = ("mode", "noise", "pose_loop")  # the options with a fixed set of values worth a dropdown


class OptionsForm:
    """A dropdown per job option with a fixed set of values, each built from its `Options` field
    (the choices, the default and the help text)."""

    def __init__(self, names: Iterable[str] = SHOWN_OPTIONS):
        import ipywidgets as w

        specs = {spec.name: spec for spec in fields(Options)}
        self.widgets: dict[str, Any] = {}
        rows = []
        for name in names:
            spec = specs.get(name)
            if spec is None or not spec.metadata["choices"]:
                raise ValueError(f"{name!r} is not an option with a set of choices")
            self.widgets[name] = w.Dropdown(options=list(spec.metadata["choices"]), value=spec.default,
                                            description=name.replace("_", " "))
            rows.append(w.HBox([self.widgets[name], w.HTML(f"<small>{html.escape(spec.metadata['help'])}</small>")]))
        self.box = w.VBox(rows)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.box)

    def values(self) -> dict[str, str]:
        """The chosen options as keyword arguments for `pcavs.generate` (validated by `Options`)."""
        chosen = {name: widget.value for name, widget in self.widgets.items()}
        Options(**chosen)
        return chosen
