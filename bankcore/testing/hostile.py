"""The machinery of the hostile-input corpora (bankcore/tests/system/test_hostile_requests.py,
transfers/tests/system/test_hostile_forms.py): tables of rows grouped by door, rows marked with a fault not
fixed yet run together under one strict xfail, placeholders filled with the world's values, and the
tracebacks logged while a row runs."""

from __future__ import annotations

import logging
import traceback

import pytest
from _pytest.mark import ParameterSet


def fault_of(param: ParameterSet) -> str:
    return str(next(iter(param.marks)).kwargs["reason"]).partition(":")[0] if param.marks else ""


class FaultFixed(Exception):
    """A row marked as exposing a fault answers as its table says now: its mark must go."""


# The marked rows of a test run together, in one world (a world each would double the run): the
# test fails on their assertion while they fail, as their marks say; a marked row that passes
# raises FaultFixed instead, which this xfail does not expect, so that each is strict on its own.
KNOWN_FAULTS = pytest.mark.xfail(
    strict=True, raises=AssertionError, reason="the rows marked with a fault (FAULTS) still expose it"
)


def faults_fixed(marked: list[tuple[str, str]], failures: dict[str, str]) -> None:
    """Raise FaultFixed for the marked rows, ``(row id, fault)``, that no longer fail."""
    fixed = [f"{row_id} ({fault})" for row_id, fault in marked if row_id not in failures]
    if fixed:
        raise FaultFixed("these rows answer as their tables say now; remove their fault marks: " + ", ".join(fixed))


def corpus(doors: dict[str, dict[str, list[ParameterSet]]]) -> list[ParameterSet]:
    """One parameter per door with its tables' sound rows, and one with every marked row: each a
    list of ``(table/row id, row, fault)``."""
    rows = [
        (door, f"{name}/{row.id}", row) for door, tables in doors.items() for name, of in tables.items() for row in of
    ]
    params = [
        pytest.param([(i, row.values[0], "") for d, i, row in rows if d == door and not row.marks], id=door)
        for door in doors
    ]
    marked = [(i, row.values[0], fault_of(row)) for _, i, row in rows if row.marks]
    # (no such item once every fault is fixed)
    return [*params, *([pytest.param(marked, id="known-faults", marks=KNOWN_FAULTS)] if marked else [])]


def filled(text: str, values: dict[str, str]) -> str:
    """``text`` with each placeholder (a key of ``values``) replaced by its value."""
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    return text


class Tracebacks(logging.Handler):
    """The tracebacks logged while a hostile-input corpus runs: a 500 logs its exception, and so does
    a failure swallowed on the way (the audit file's). Django's security loggers are left out: a
    SuspiciousOperation answered 400 is logged with its exception by design."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and not record.name.startswith("django.security"):
            self.seen.append("".join(traceback.format_exception(*record.exc_info)))
