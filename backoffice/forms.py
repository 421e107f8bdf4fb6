"""The back office's form bases and fields: what a teller types, read as they type it."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from typing import Any

from django import forms


class IdempotentForm(forms.Form):
    """A hidden nonce minted when the form is shown. The idempotency key is the nonce and a digest
    of what the form says: sent twice as it is (a double click, a reload) it moves money once;
    corrected after a refusal and sent again, it is a new request."""

    idempotency_key = forms.CharField(widget=forms.HiddenInput, required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.is_bound:
            self.initial.setdefault("idempotency_key", uuid.uuid4().hex)

    def key(self) -> str | None:
        nonce = self.cleaned_data.get("idempotency_key")
        if not nonce:
            return None
        content = {name: str(value) for name, value in self.cleaned_data.items() if name != "idempotency_key"}
        digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]
        return f"{nonce}.{digest}"


# Digits grouped by threes as a teller types them: "1,000.00", "1 000.00" (a space or a no-break space).
GROUPED_AMOUNT = re.compile(r"\d{1,3}(?:([, \u00a0])\d{3})(?:\1\d{3})*(?:\.\d+)?")
ACCOUNT_SEPARATORS = str.maketrans("", "", " -\u00a0")


class AmountField(forms.CharField):
    """An amount as typed: grouping separators dropped where they group digits by three; the rest
    is the service's to judge (``bankcore.money.money_parse``)."""

    def to_python(self, value: Any) -> str:
        text = str(super().to_python(value))
        return re.sub(r"[, \u00a0]", "", text) if GROUPED_AMOUNT.fullmatch(text) else text


class AccountNumberField(forms.CharField):
    """An account number as typed, in groups with spaces or dashes as on paper."""

    def to_python(self, value: Any) -> str:
        return str(super().to_python(value)).translate(ACCOUNT_SEPARATORS)


class ReasonForm(forms.Form):
    reason = forms.CharField(
        max_length=500, required=False, widget=forms.Textarea(attrs={"rows": 3, "placeholder": "Reason"})
    )


class RequiredReasonForm(forms.Form):
    """A change of state (freeze, unfreeze, close): the reason is written into the audit trail, and
    required."""

    reason = forms.CharField(
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "Why (kept in the audit trail)", "autofocus": True}),
    )
