"""The partner API's door, shared by the apps' views: problem responses and Django's error views
(``problems``), the JSON parser (``parsers``), strict fields and the serializer base (``fields``,
``serializers``), pagination, the OpenAPI hooks (``schema``), JWT authentication, throttling and
the routes under /api/ (``urls``, which include each app's ``api_urls``)."""
