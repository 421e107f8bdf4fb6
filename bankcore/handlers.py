"""The WSGI handler the servers run (``bankcore.wsgi``): Django's, with a request class that
survives a ``Content-Type`` header it cannot parse.

Django parses the header while it builds the request, before any middleware or view can answer:
an RFC 2231 parameter in a charset Python does not know (``application/json; a*=klingon''x``)
raised ValueError there, and gunicorn answered with its own bare 500. Such a header now reads as
no media type at all (``META["CONTENT_TYPE"]`` emptied too, which DRF reads), which the API
refuses with 415 ``unsupported_media_type`` (and a form of the back office reads as an empty
one), nothing moved.

Django's test client builds its requests itself, not with this class: tests of this call the
handler (``bankcore/tests/test_api_errors.py``).
"""

from __future__ import annotations

from typing import Any

from django.core.handlers.wsgi import WSGIHandler, WSGIRequest


class BankcoreWSGIRequest(WSGIRequest):
    def _set_content_type_params(self, meta: Any) -> None:
        try:
            super()._set_content_type_params(meta)  # type: ignore[misc]  # (not in django-stubs)
        except ValueError:
            # DRF reads the header from META again (and parses it again): it goes there too.
            meta["CONTENT_TYPE"] = ""
            self.content_type, self.content_params = "", {}


class BankcoreWSGIHandler(WSGIHandler):
    request_class = BankcoreWSGIRequest
