"""The parent run's ``confirmation.csv``: a row per confirmed configuration, written and read."""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from tauray.layout import CHAMPION_STATS

_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*(e[+-]?\d+)?|nan|inf)$", re.IGNORECASE)

#: The columns of :data:`CONFIRMATION_FILE`, one row per confirmed configuration.
CONFIRMATION_COLUMNS = ("search_run_id", "temperature_mode", "temperature", *CHAMPION_STATS)


def confirmation_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """:data:`CONFIRMATION_FILE`'s text: a header of :data:`CONFIRMATION_COLUMNS`, then a row
    per configuration (numbers as ``repr`` so they read back exactly; NaN as ``nan``)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CONFIRMATION_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: row.get(key, "") for key in CONFIRMATION_COLUMNS} for row in rows)
    return out.getvalue()


def read_confirmation_csv(text: str) -> list[dict[str, Any]]:
    """:data:`CONFIRMATION_FILE` read back: the run id and τ mode as text, ``n`` as an int,
    the other numbers as floats (NaN where empty)."""
    rows = []
    for raw in csv.DictReader(io.StringIO(text)):
        row: dict[str, Any] = {key: raw.get(key) or "" for key in CONFIRMATION_COLUMNS[:2]}
        for key in CONFIRMATION_COLUMNS[2:]:
            row[key] = float(raw[key]) if _NUMBER.match(raw.get(key) or "") else float("nan")
        row["n"] = int(row["n"]) if math.isfinite(row["n"]) else 0
        rows.append(row)
    return rows
