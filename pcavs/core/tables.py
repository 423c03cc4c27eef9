"""Tables of work (`pcavs batch`, `pcavs eval --csv`): a CSV file or a list of dicts, read one way.

Cells are text, stripped; blank rows are skipped. Every path in a table is relative to the CSV
file's folder (to the working folder for an in-memory list), `~` expanded.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import InputError


@dataclass
class Table:
    """Rows as (number, {column: text}): the row's line in the file (the header is line 1), or its list index."""

    name: str  # how errors refer to the table
    base: Path  # where relative paths start
    rows: list[tuple[int, dict[str, str]]]

    @property
    def columns(self) -> list[str]:
        """Every column a row has a cell in, in first-seen order."""
        return list(dict.fromkeys(column for _, row in self.rows for column in row if column))

    def path(self, text: str | None) -> Path | None:
        """A cell naming a file, as an absolute path (None for an empty cell)."""
        text = (text or "").strip()
        return (self.base / Path(text).expanduser()).resolve() if text else None


def read_table(source: str | os.PathLike | Sequence[Mapping[str, Any]], header_hint: str) -> Table:
    """A CSV file (UTF-8, a BOM allowed) or a list of dicts as a Table; `header_hint` says what the header needs."""
    if not isinstance(source, (str, os.PathLike)):
        rows = [(index, {str(k).strip(): "" if v is None else str(v).strip() for k, v in dict(row).items()})
                for index, row in enumerate(source)]
        if not rows:
            raise InputError("jobs: the list is empty")
        return Table("jobs", Path.cwd(), rows)
    path = Path(source)
    rows = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            for row in reader:
                if None in row:
                    raise InputError(f"{path}: row {reader.line_num} has more cells than the header has columns")
                if any((value or "").strip() for value in row.values()):
                    rows.append((reader.line_num, {k.strip(): (v or "").strip() for k, v in row.items()}))
    except OSError as exc:
        raise InputError(f"{path}: cannot read the table ({exc.strerror})") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable CSV file ({exc}); save it as UTF-8 CSV") from None
    if not rows:
        raise InputError(f"{path}: needs a header with {header_hint}, and at least one row")
    return Table(str(path), path.resolve().parent, rows)
