"""The API's input serializer base: strict about the fields it takes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.utils.functional import cached_property
from drf_spectacular.extensions import OpenApiSerializerExtension
from rest_framework import serializers

from bankcore.api.problems import UnknownField


class StrictInputSerializer(serializers.Serializer[Any]):
    """An input serializer that refuses fields it does not know (400 ``unknown_field``): a typo in
    an optional field must not be silently ignored when money moves.

    Its fields are built and bound once per class and shared by every instance (see ``fields``)."""

    @cached_property
    def fields(self) -> Any:
        """The class's one set of fields, bound to a template instance with no data, no context and
        not partial. DRF deep-copies every declared field for every instance (re-running each
        field's ``__init__``), a large share of an API transfer's CPU (docs/performance.md). Sharing
        is safe because a field keeps only its configuration: what validation finds lives on the
        serializer (``_validated_data``, ``_errors``), and what a field reads from its root
        (``partial``, ``context``) is the template's. An instance that is partial or has a context
        gets its own fields, as in DRF."""
        if self.partial or self._context:
            return serializers.Serializer.fields.func(self)  # type: ignore[attr-defined]
        cls = type(self)
        shared = cls.__dict__.get("_shared_fields")
        if shared is None:  # two threads may both build it; either result serves
            template = cls()
            shared = serializers.Serializer.fields.func(template)  # type: ignore[attr-defined]
            cls._shared_fields = shared  # type: ignore[attr-defined]
        return shared

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
