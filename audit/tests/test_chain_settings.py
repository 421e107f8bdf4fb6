"""The chain key comes from the environment (or a file); production refuses to start without a
real one, exactly as it refuses a default SECRET_KEY."""

import os
import subprocess
import sys

import pytest

PRODUCTION_SECRETS = {"SECRET_KEY": "s" * 40, "JWT_SECRET_KEY": "j" * 40}


def _production(tmp_path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DB", "REDIS", "SECRET", "JWT", "AUDIT_CHAIN"))}
    clean.update(
        PRODUCTION_SECRETS, BANKCORE_VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="bankcore.settings.production"
    )
    clean.update(env)
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, django; django.setup(); from django.conf import settings; "
            "print(getattr(settings, os.environ.get('PRINT', 'AUDIT_CHAIN_KEY')))",
        ],
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "value",
    [None, "", "too-short", "insecure-development-secret-do-not-use-in-production-0123456789-audit-chain"],
)
def test_production_refuses_a_missing_short_or_default_chain_key(tmp_path, value):
    result = _production(tmp_path, **({} if value is None else {"AUDIT_CHAIN_KEY": value}))
    assert result.returncode != 0
    assert "AUDIT_CHAIN_KEY must be set to a random value of at least 32 characters" in result.stderr


def test_production_refuses_a_chain_key_shared_with_another_secret(tmp_path):
    for other in PRODUCTION_SECRETS.values():
        result = _production(tmp_path, AUDIT_CHAIN_KEY=other)
        assert result.returncode != 0 and "AUDIT_CHAIN_KEY must differ" in result.stderr


def test_the_chain_key_may_come_from_a_file(tmp_path):
    key_file = tmp_path / "audit-chain-key"
    key_file.write_text("k" * 40 + "\n")
    result = _production(tmp_path, AUDIT_CHAIN_KEY_FILE=str(key_file))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "k" * 40


def test_retired_chain_keys_are_a_comma_separated_list_and_never_the_current_key(tmp_path):
    retired_file = tmp_path / "retired-keys"
    retired_file.write_text("r" * 40 + ", " + "q" * 40 + "\n")
    result = _production(
        tmp_path,
        AUDIT_CHAIN_KEY="k" * 40,
        AUDIT_CHAIN_RETIRED_KEYS_FILE=str(retired_file),
        PRINT="AUDIT_CHAIN_RETIRED_KEYS",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(["r" * 40, "q" * 40])

    result = _production(tmp_path, AUDIT_CHAIN_KEY="k" * 40, AUDIT_CHAIN_RETIRED_KEYS="r" * 40 + "," + "k" * 40)
    assert result.returncode != 0 and "AUDIT_CHAIN_RETIRED_KEYS holds AUDIT_CHAIN_KEY itself" in result.stderr
