"""Helpers shared by the checks: where a mask first fails, report tables."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd


def first_true_position(mask: np.ndarray) -> tuple[int, tuple[int, ...]]:
    """(channel, position) of the first True in an N×C×... mask; position = (n, spatial...)."""
    idx = np.unravel_index(int(np.flatnonzero(mask)[0]), mask.shape)
    return (int(idx[1]) if mask.ndim > 1 else 0), (int(idx[0]),) + tuple(int(i) for i in idx[2:])


def at(array: np.ndarray, channel: int, position: tuple[int, ...]):
    """The element of an N×C×... array at (channel, position) as returned above."""
    return array[(position[0], channel) + tuple(position[1:])]


def integer_columns(table: pd.DataFrame, columns) -> pd.DataFrame:
    """Count columns as nullable integers (None where a check does not apply)."""
    for col in columns:
        table[col] = table[col].astype("Int64")
    return table


def table_records(table: pd.DataFrame) -> list[dict]:
    """The rows of a report table as JSON-ready dicts."""
    return json.loads(table.to_json(orient="records"))


def table_text(table: pd.DataFrame) -> str:
    """The whole table as text (no row or column elision)."""
    with pd.option_context("display.max_rows", None, "display.width", 200, "display.max_columns", None):
        return table.to_string(index=False)
