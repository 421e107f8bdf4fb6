"""Pagination of the API's lists."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers
from rest_framework.pagination import CursorPagination

from bankcore.api.fields import BoundedDateTimeField


class DateTimeCursorPagination(CursorPagination):
    """DRF's cursor pagination for an ordering by a date-time field, whose cursor's position (the
    last row's date-time, which a client can craft) is checked as ``BoundedDateTimeField`` checks
    a filter: 400 ``validation_error`` on ``cursor``, not a position the database cannot take
    (year 1 overflowed converting it to UTC, a 500)."""

    def decode_cursor(self, request: Any) -> Any:
        cursor = super().decode_cursor(request)
        if cursor is not None and cursor.position is not None:
            try:
                BoundedDateTimeField().run_validation(cursor.position)
            except serializers.ValidationError as invalid:
                raise serializers.ValidationError({self.cursor_query_param: invalid.detail}) from None
        return cursor
