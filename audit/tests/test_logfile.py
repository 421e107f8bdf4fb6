"""The audit file rotates like banking.log, and lets logrotate move it away when told to."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from audit.logfile import audit_log_write


@pytest.fixture
def audit_file(settings, tmp_path):
    settings.AUDIT_LOG_FILE = tmp_path / "logs" / "audit.log"
    settings.AUDIT_LOG_ENABLED = True
    return settings.AUDIT_LOG_FILE


def write(n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        audit_log_write({"type": "event", "action": "test.rotated", "i": i, "padding": "x" * 100})


def lines_in(*paths) -> list[dict]:
    return [json.loads(line) for path in paths for line in path.read_text().splitlines()]


def test_the_audit_file_rotates_at_the_log_file_limits_without_losing_a_line(audit_file, settings):
    settings.LOG_FILE_MAX_BYTES = 2_000
    settings.LOG_FILE_BACKUP_COUNT = 100

    write(60)

    rotated = sorted(audit_file.parent.glob("audit.log.*[0-9]"), key=lambda p: -int(p.suffix[1:]))
    assert len(rotated) >= 3  # 60 lines of ~200 bytes into files of 2000
    for path in [*rotated, audit_file]:
        assert 0 < path.stat().st_size <= 2_000
    # oldest file first: every line once, whole and in order
    assert [line["i"] for line in lines_in(*rotated, audit_file)] == list(range(60))


def test_only_log_file_backup_count_old_files_are_kept(audit_file, settings):
    settings.LOG_FILE_MAX_BYTES = 2_000
    settings.LOG_FILE_BACKUP_COUNT = 2

    write(60)

    names = sorted(p.name for p in audit_file.parent.iterdir() if not p.name.endswith(".lock"))
    assert names == ["audit.log", "audit.log.1", "audit.log.2"]
    assert lines_in(audit_file)[-1]["i"] == 59


def test_with_rotation_off_logrotate_may_move_the_file_away(audit_file, settings):
    # given rotation left to logrotate (LOG_FILE_MAX_BYTES=0)
    settings.LOG_FILE_MAX_BYTES = 0
    write(30)
    assert len(lines_in(audit_file)) == 30 and audit_file.stat().st_size > 2_000

    # when logrotate moves the file away (its default "create" mode) and the process writes on
    moved = audit_file.with_name("audit.log-20260101")
    audit_file.rename(moved)
    write(1, start=30)

    # then the line goes to a new file at the configured path, not after the moved one's end
    assert [line["i"] for line in lines_in(audit_file)] == [30]
    assert [line["i"] for line in lines_in(moved)] == list(range(30))


def test_threads_writing_at_once_each_leave_whole_lines_through_rotation(audit_file, settings):
    settings.LOG_FILE_MAX_BYTES = 20_000
    settings.LOG_FILE_BACKUP_COUNT = 1000

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda t: write(200, start=t * 1000), range(8)))

    files = [*audit_file.parent.glob("audit.log.*[0-9]"), audit_file]
    assert sorted(line["i"] for line in lines_in(*files)) == sorted(t * 1000 + i for t in range(8) for i in range(200))


def test_a_line_that_cannot_be_written_is_reported_and_does_not_raise(audit_file, settings, caplog):
    # given the configured path is a directory, where no line can go
    settings.AUDIT_LOG_FILE = audit_file.parent / "a-directory"
    settings.AUDIT_LOG_FILE.mkdir(parents=True)

    write(1)

    assert "could not write the audit log file" in caplog.text

    # and once the setting is right again, the next line is written
    settings.AUDIT_LOG_FILE = audit_file
    write(1, start=1)
    assert [line["i"] for line in lines_in(audit_file)] == [1]


def test_a_disabled_audit_file_stays_unwritten_until_enabled_again(audit_file, settings):
    write(1)
    settings.AUDIT_LOG_ENABLED = False

    write(2, start=1)  # the settings are read once, then remembered: disabled both times

    assert [line["i"] for line in lines_in(audit_file)] == [0]
    settings.AUDIT_LOG_ENABLED = True
    write(1, start=3)
    assert [line["i"] for line in lines_in(audit_file)] == [0, 3]


def test_a_lone_surrogate_is_written_as_its_json_escape_and_reads_back_the_same(audit_file, caplog):
    # A JSON body's "\ud800" escape parses to a lone surrogate, which UTF-8 cannot hold: the line
    # was lost ("could not write the audit log file"). Now it is written as that same JSON escape.
    values = ["\ud800", "a\\\udfffb", "发票 \udbff 42", "plain"]
    for value in values:
        audit_log_write({"type": "request", "body": {"reference": value}})

    assert "could not write the audit log file" not in caplog.text
    raw = audit_file.read_bytes()
    raw.decode("utf-8")  # the file is UTF-8 throughout
    assert [line["body"]["reference"] for line in lines_in(audit_file)] == values
    assert "发票".encode() in raw  # other text is kept as it is, not escaped
