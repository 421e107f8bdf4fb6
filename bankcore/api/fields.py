"""Strict fields for the API's input: no whitespace trimmed, no other spelling of a number than
the schema states, amounts as strings, date-times within the years the database takes."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from bankcore.db import FILTER_YEARS
from bankcore.money import InvalidAmount, InvalidCurrency, currency_parse, money_parse


class StrictIntegerField(serializers.IntegerField):
    """An integer as a JSON number or a string of ASCII digits, nothing else: DRF's read " 12 ",
    "12.0" and "1_2" all as 12."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, str) and not (data.isascii() and data.isdigit()):
            self.fail("invalid")
        return int(super().to_internal_value(data))


class StrictCharField(serializers.CharField):
    """Text only: DRF's CharField would turn a JSON number or boolean into its string."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return str(super().to_internal_value(data))


# A positive amount in its plain form: no sign, no leading zero, at most 18 digits before the point
# (what the column holds) and two after. The schema states it and the door holds the API to it.
AMOUNT_PATTERN = r"^(0\.(0[1-9]|[1-9][0-9]?)|[1-9][0-9]{0,17}(\.[0-9]{1,2})?)$"
_AMOUNT_FORM = re.compile(AMOUNT_PATTERN)


@extend_schema_field({"type": "string", "pattern": AMOUNT_PATTERN, "maxLength": 21, "example": "125.50"})
class AmountField(serializers.Field[Decimal, str, str, Any]):
    """An amount: a JSON string in the form ``AMOUNT_PATTERN`` ("125.50"), checked by
    ``bankcore.money.money_parse``."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            raise serializers.ValidationError(
                'Amounts are JSON strings, e.g. "125.50", never numbers.', code=InvalidAmount.code
            )
        if not _AMOUNT_FORM.fullmatch(data):
            raise serializers.ValidationError(
                "An amount is a positive decimal string with at most two decimal places and no leading "
                'zero, e.g. "125.50".',
                code=InvalidAmount.code,
            )
        try:
            return money_parse(data)
        except InvalidAmount as refused:
            raise serializers.ValidationError(refused.detail, code=refused.code) from None

    def to_representation(self, value: Any) -> str:
        return str(value)


class ExactRegexField(serializers.RegexField):
    """DRF's RegexField held to the whole text, untrimmed, as the schema's ECMA pattern reads: DRF
    trims surrounding whitespace first and its validator searches, so ``^[0-9]{2}$`` let "01\\n"
    through."""

    def __init__(self, regex: str, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(regex, **kwargs)
        self._whole = re.compile(regex)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str) or not self._whole.fullmatch(data):
            self.fail("invalid")
        return str(super().to_internal_value(data))


@extend_schema_field({"type": "string", "pattern": "^[A-Z]{3}$", "example": "CNY"})
class CurrencyField(serializers.Field[str, str, str, Any]):
    """An ISO 4217 code, checked by ``bankcore.money.currency_parse``."""

    def to_internal_value(self, data: Any) -> str:
        try:
            return currency_parse(data)
        except InvalidCurrency as refused:
            raise serializers.ValidationError(refused.detail, code=refused.code) from None

    def to_representation(self, value: Any) -> str:
        return str(value)


class BoundedDateTimeField(serializers.DateTimeField):
    """An ISO 8601 date or date-time (a date means its midnight in ``TIME_ZONE``), within years
    that every time zone conversion on the way to the database survives.

    A value outside them is refused (``overflow``), or, with ``clamp=True``, taken as the nearest
    end of them: for a filter's bound, where every row lies within those years, that selects the
    same rows, so any date-time the schema allows is answered."""

    def __init__(self, *, clamp: bool = False, **kwargs: Any) -> None:
        self.clamp = clamp
        super().__init__(**kwargs)

    def _outside(self, value: Any) -> Any:
        if not self.clamp:
            self.fail("overflow")
        if value.year < FILTER_YEARS.start:
            return timezone.make_aware(datetime(FILTER_YEARS.start, 1, 1))
        return timezone.make_aware(datetime(FILTER_YEARS.stop - 1, 12, 31, 23, 59, 59, 999999))

    def enforce_timezone(self, value: Any) -> Any:
        # Checked before DRF makes a naive value aware (local time), whose check of the result
        # converts it to UTC uncaught (year 1 at +08:00 is year 0 there: an OverflowError, a 500),
        # and before DRF converts an aware one to local time (which overflows the same way).
        if value.year not in FILTER_YEARS:
            return self._outside(value)
        return super().enforce_timezone(value)

    def to_internal_value(self, value: Any) -> Any:
        parsed = super().to_internal_value(value)
        if parsed.year not in FILTER_YEARS:  # in local time: 9000-12-31T23:59-12:00 is 9001 here
            return self._outside(parsed)
        return parsed
