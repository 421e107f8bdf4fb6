"""The API's input serializer base: strict about the fields it takes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from drf_spectacular.extensions import OpenApiSerializerExtension
from rest_framework import serializers

from bankcore.api.problems import UnknownField
from bankcore.fastpaths import SharedFields


class StrictInputSerializer(SharedFields):
    """An input serializer that refuses fields it does not know (400 ``unknown_field``): a typo in
    an optional field must not be silently ignored when money moves.

    Its fields are built and bound once per class and shared by every instance
    (``bankcore.fastpaths.SharedFields``)."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            unknown = [str(name) for name in data if name not in self.fields]
            if unknown:
                raise serializers.ValidationError(
                    {
                        name[:100]: [serializers.ErrorDetail("Unknown field.", code=UnknownField.code)]
                        for name in unknown
                    }
                )
        return super().to_internal_value(data)


class StrictInputSerializerScheme(OpenApiSerializerExtension):
    """In the schema, a strict input serializer's object takes no other property
    (``additionalProperties: false``), as it refuses them (400 ``unknown_field``)."""

    target_class = StrictInputSerializer
    match_subclasses = True

    def map_serializer(self, auto_schema: Any, direction: Any) -> Any:
        schema = auto_schema._map_basic_serializer(self.target, direction)
        schema["additionalProperties"] = False
        return schema
