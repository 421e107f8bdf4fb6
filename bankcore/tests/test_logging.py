"""Logs: one JSON object per line, each with the request id that the request's audit events carry;
a rotating file that several processes share without losing or mangling a line."""

from __future__ import annotations

import io
import json
import logging
import runpy
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.http import HttpResponse
from django.test import RequestFactory

from audit.services import audit_event_record
from bankcore.actors import Actor, Channel
from bankcore.logging import (
    JsonFormatter,
    ProcessSafeRotatingFileHandler,
    RequestIdFilter,
    current_request_id,
    request_id_bound,
)
from bankcore.middleware import RequestIdMiddleware


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Lines of the ``bankcore.test`` logger, formatted as in production."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("bankcore.test")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_is_one_json_object_with_the_request_id_and_extra_fields(captured):
    with request_id_bound("req-12345678"):
        logging.getLogger("bankcore.test").info("moved %s", "12.50", extra={"transfer_id": 7})

    [line] = lines(captured)
    assert line["message"] == "moved 12.50"
    assert line["level"] == "INFO"
    assert line["logger"] == "bankcore.test"
    assert line["request_id"] == "req-12345678"
    assert line["transfer_id"] == 7
    assert str(line["time"]).endswith("Z")


def test_an_exception_is_kept_on_its_line(captured):
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        logging.getLogger("bankcore.test").exception("failed")

    [line] = lines(captured)  # the newline in the message does not split the line
    assert "ValueError: bad\nthing" in str(line["exc_info"])
    assert line["request_id"] == ""


def test_account_numbers_keep_their_last_four_digits_on_every_field_of_a_line(captured):
    """Django's own lines (``django.request``'s "Unauthorized: /api/v1/accounts/<number>/",
    with the request's repr as an extra) and any traceback carry what a client typed."""

    class Request:
        def __repr__(self) -> str:
            return "<WSGIRequest: GET '/api/v1/accounts/01000000000742/?account=01000000000742'>"

    try:
        raise ValueError("no account 0100 0000 0007 42")
    except ValueError:
        logging.getLogger("bankcore.test").warning(
            "Unauthorized: %s",
            "/api/v1/accounts/01000000000742/",
            exc_info=True,
            extra={"request": Request(), "status_code": 401, "numbers": ["01000000000742"]},
        )
    [line] = lines(captured)
    assert "01000000000742" not in json.dumps(line) and "0100 0000 0007 42" not in json.dumps(line)
    assert line["message"] == "Unauthorized: /api/v1/accounts/**********0742/"
    assert line["status_code"] == 401
    assert line["numbers"] == ["**********0742"]
    assert "ValueError: no account **********0742" in str(line["exc_info"])


def test_the_middleware_binds_the_request_id_for_the_request_only(captured):
    seen: list[str] = []

    def view(request):
        seen.append(current_request_id())
        logging.getLogger("bankcore.test").info("inside")
        return HttpResponse("ok")

    middleware = RequestIdMiddleware(view)
    response = middleware(RequestFactory().get("/", HTTP_X_REQUEST_ID="abcdef0123456789"))

    assert seen == ["abcdef0123456789"]
    assert response["X-Request-ID"] == "abcdef0123456789"
    assert lines(captured)[0]["request_id"] == "abcdef0123456789"
    assert current_request_id() == ""

    # An unusable id (a log-injection attempt) is replaced by a fresh one.
    response = middleware(RequestFactory().get("/", HTTP_X_REQUEST_ID='x"\n{"forged": 1}'))
    assert seen[1] == response["X-Request-ID"] and len(seen[1]) == 32


@pytest.mark.django_db(databases="__all__")
def test_audit_events_share_the_request_id_of_the_log_lines():
    with request_id_bound("shared-req-0001"):
        actor = Actor.system(Channel.TASK, "pytest")
        event = audit_event_record(actor=actor, action="test.logged", object_type="test", object_id="1")

    assert event.request_id == "shared-req-0001"
    # Outside of a request or task, every actor gets an id of its own.
    assert Actor.system().request_id != Actor.system().request_id


def test_the_rotating_file_is_shared_by_processes_without_losing_a_line(tmp_path):
    # given four processes logging through the production handler into one small rotating file
    log = tmp_path / "logs" / "banking.log"
    write = textwrap.dedent(
        f"""
        import logging, sys
        from bankcore.logging import JsonFormatter, ProcessSafeRotatingFileHandler
        handler = ProcessSafeRotatingFileHandler({str(log)!r}, maxBytes=20_000, backupCount=1000)
        handler.setFormatter(JsonFormatter())
        logger = logging.getLogger("w")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        for i in range(400):
            logger.info("line", extra={{"writer": sys.argv[1], "i": i, "padding": "x" * 40}})
        """
    )
    writers = [
        subprocess.Popen([sys.executable, "-c", write, str(n)], cwd=settings.BASE_DIR, env={"PATH": "/usr/bin:/bin"})
        for n in range(4)
    ]
    assert [w.wait(timeout=120) for w in writers] == [0, 0, 0, 0]

    # then every line is in exactly one file, whole, and the files kept their size limit
    files = [p for p in log.parent.iterdir() if not p.name.endswith(".lock")]
    assert len(files) > 5  # it did rotate, many times
    seen = []
    for path in files:
        assert path.stat().st_size <= 20_000
        seen += [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted((line["writer"], line["i"]) for line in seen) == sorted(
        (str(n), i) for n in range(4) for i in range(400)
    )


def test_with_no_backups_a_full_file_starts_again_empty_and_stays_within_its_limit(tmp_path, monkeypatch):
    # given two processes' handlers on one file that keeps no old copies (LOG_FILE_BACKUP_COUNT=0)
    log = tmp_path / "banking.log"
    opened: list[str] = []
    original_open = ProcessSafeRotatingFileHandler._open

    def counting_open(self):
        opened.append(self.baseFilename)
        return original_open(self)

    monkeypatch.setattr(ProcessSafeRotatingFileHandler, "_open", counting_open)
    loggers = []
    for n in range(2):
        handler = ProcessSafeRotatingFileHandler(log, maxBytes=2_000, backupCount=0)
        handler.setFormatter(JsonFormatter())
        logger = logging.getLogger(f"bankcore.test.nobackup{n}")
        logger.propagate = False
        logger.addHandler(handler)
        loggers.append((logger, handler))

    # when they write far more than the limit
    sizes = []
    for i in range(200):
        loggers[i % 2][0].warning("line", extra={"i": i, "padding": "x" * 40})
        sizes.append(log.stat().st_size)
    for logger, handler in loggers:
        logger.removeHandler(handler)
        handler.close()

    # then there is one file, never past the limit, holding whole lines up to the newest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["banking.log", "banking.log.lock"]
    assert max(sizes) <= 2_000 and min(sizes[100:]) < 500  # it was emptied, again and again
    kept = [json.loads(line)["i"] for line in log.read_text().splitlines()]
    assert kept == list(range(kept[0], 200))
    # and a file is opened once per rollover, not for every line
    assert len(opened) < 40


def test_settings_send_every_logger_to_stdout_and_the_file_as_json():
    assert settings.LOGGING["root"]["handlers"] == ["stdout", "file"]
    for name in ("stdout", "file"):
        handler = settings.LOGGING["handlers"][name]
        assert handler["formatter"] == "json" and handler["filters"] == ["request_id"]
    assert settings.LOGGING["handlers"]["file"]["maxBytes"] == 10 * 1024 * 1024
    assert settings.CELERY_WORKER_HIJACK_ROOT_LOGGER is False


def _gunicorn_access_line(
    *,
    request_headers: list[tuple[str, str]],
    response_headers: list[tuple[str, str]],
    environ: dict[str, str] | None = None,
) -> dict:
    """The access line deploy/gunicorn.conf.py's format gives for one request."""
    from datetime import timedelta
    from types import SimpleNamespace

    from gunicorn import glogging
    from gunicorn.config import Config

    config = runpy.run_path(str(settings.BASE_DIR / "deploy" / "gunicorn.conf.py"))
    environ = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": "/metrics",
        "PATH_INFO": "/metrics",
        "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "10.0.0.9",
        **(environ or {}),
    }
    response = SimpleNamespace(status="200 OK", headers=response_headers, sent=120)
    request = SimpleNamespace(headers=[(name.upper(), value) for name, value in request_headers])
    atoms = glogging.Logger(Config()).atoms(response, request, environ, timedelta(milliseconds=4))
    return json.loads(config["access_log_format"] % config["JsonSafeAtoms"](atoms))


def test_gunicorn_access_lines_carry_the_request_id_the_app_answered_with():
    # A Prometheus scrape or health check straight to gunicorn: no id came in, the app made one up.
    line = _gunicorn_access_line(request_headers=[], response_headers=[("X-Request-ID", "a1" * 16)])
    assert line["request_id"] == "a1" * 16 and line["path"] == "/metrics" and line["status"] == 200
    # Through nginx: the app answers with nginx's id.
    line = _gunicorn_access_line(
        request_headers=[("X-Request-ID", "b2" * 16)], response_headers=[("X-Request-ID", "b2" * 16)]
    )
    assert line["request_id"] == "b2" * 16
    # A response gunicorn made itself (the app never saw the request): nginx's id still.
    line = _gunicorn_access_line(request_headers=[("X-Request-ID", "c3" * 16)], response_headers=[])
    assert line["request_id"] == "c3" * 16


def test_gunicorn_access_lines_stay_json_whatever_the_client_sent():
    """Quotes, backslashes and control characters in the path, the query or a header are escaped
    (gunicorn's own atoms only escape double quotes)."""
    odd = 'a"b\\c\x01d\te\u2028'
    line = _gunicorn_access_line(
        request_headers=[("X-Real-IP", odd)],
        response_headers=[],
        environ={
            "RAW_URI": f"/x/{odd}?q={odd}",
            "PATH_INFO": f"/x/{odd}",
            "QUERY_STRING": f"q={odd}",
            "HTTP_USER_AGENT": odd,
        },
    )
    assert line["path"] == f"/x/{odd}" and line["query"] == f"q={odd}"
    assert line["user_agent"] == odd and line["remote_addr"] == odd
    assert line["bytes"] == "120" and line["method"] == "GET"


def test_gunicorn_access_lines_mask_account_numbers_in_the_path_and_query():
    """What a client typed into the URL may carry account numbers; the access line keeps their
    last 4 digits, as the audit file does (``bankcore.masking``)."""
    number = "01000000000742"
    line = _gunicorn_access_line(
        request_headers=[("Referer", f"https://partner.example/?a={number}")],
        response_headers=[],
        environ={
            "RAW_URI": f"/api/v1/accounts/{number}/entries/?account={number}",
            "PATH_INFO": f"/api/v1/accounts/{number}/entries/",
            "QUERY_STRING": f"account={number}&grouped=0100-0000-0007-42",
        },
    )
    assert number not in json.dumps(line)
    assert line["path"] == "/api/v1/accounts/**********0742/entries/"
    assert line["query"] == "account=**********0742&grouped=**********0742"
