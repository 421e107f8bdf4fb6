"""schemathesis hooks for the API contract test (``bankcore/tests/system/test_api_contract.py``), loaded by
the schemathesis CLI through its config's ``hooks``.

The schema names two custom string formats whose rule no JSON Schema keyword can state; these
strategies generate values that keep them, so a request the schema calls valid is valid:

- ``account-number``: 14 digits whose last two are ISO 7064 MOD 97-10 check digits;
- ``visible-text``: letters, marks, numbers, punctuation, symbols and spaces (Unicode L, M, N, P,
  S, Zs).

And one check: a problem's ``code`` is one of those its response lists in ``x-problem-codes``.
"""

from __future__ import annotations

import json
from typing import Any

import schemathesis
from hypothesis import strategies as st

from accounts.numbers import SERIAL_DIGITS, account_number_make

schemathesis.openapi.format(
    "account-number",
    st.builds(
        lambda ledger, serial: account_number_make(ledger_code=f"{ledger:02d}", serial=serial),
        st.integers(0, 99),
        st.integers(1, 10**SERIAL_DIGITS - 1),
    ),
)
schemathesis.openapi.format(
    "visible-text", st.text(st.characters(categories=["L", "M", "N", "P", "S", "Zs"]), max_size=140)
)


@schemathesis.check
def problem_code_documented(ctx: Any, response: Any, case: Any) -> bool | None:
    """A problem response's ``code`` is one its operation documents for that status."""
    if not response.headers.get("content-type", [""])[0].startswith("application/problem+json"):
        return None
    documented = case.operation.definition.raw.get("responses", {}).get(str(response.status_code), {})
    codes = documented.get("x-problem-codes")
    if codes is None:
        return None  # no such status documented: status_code_conformance reports it
    code = json.loads(response.content or b"{}").get("code")
    if code not in codes:
        raise AssertionError(
            f"{case.operation.label} answered {response.status_code} with code {code!r}, documented: {codes}"
        )
    return True
