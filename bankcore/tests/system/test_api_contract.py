"""The partner API's contract, proven against a live server: gunicorn with the production settings
on this run's MariaDB servers and Redis.

- schemathesis (its CLI, ``--checks all``, positive and negative data, stateful links) finds no
  failure and no warning: every request the schema calls valid is accepted (or refused by a
  business rule: 404, 409, 422), every request it calls invalid is answered with a 4xx problem,
  and every answer is documented, problem codes included (``bankcore.testing.contract_hooks``);
- a client generated from the schema by openapi-python-client logs in and makes a transfer.

The server's throttles and django-axes' lockout are raised for the run: schemathesis sends far
more requests than a partner may, and logs in with made-up names. docs/api.md states the real
limits."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.hashers import make_password

from bankcore.env import env_int
from bankcore.testing.books import balances
from bankcore.testing.native import ROOT, Stack, http
from bankcore.testing.personas import api_user
from bankcore.testing.plugin import ledger_servers, redis_server
from bankcore.testing.processes import production_env, run_manage, subprocess_env
from bankcore.testing.servers import free_port
from transfers.services import transfer_create

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True, databases="__all__")]

BIN = Path(sys.executable).parent
# Cases per operation and phase; the whole run stays near a minute on a busy 2-core machine. A
# deeper one: BANKCORE_SCHEMATHESIS_EXAMPLES=200 .venv/bin/python -m pytest --timeout=0 -k schemathesis.
SCHEMATHESIS_MAX_EXAMPLES = env_int("BANKCORE_SCHEMATHESIS_EXAMPLES", 20, minimum=1)
PASSWORD = "contract-partner-pw"
SEED_TRANSFERS = 12


class LiveServer:
    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stack = Stack(directory)
        self.env = production_env(
            directory / "logs",
            GUNICORN_BIND=f"127.0.0.1:{self.port}",
            GUNICORN_WORKERS="2",
            GUNICORN_THREADS="4",
            PROMETHEUS_MULTIPROC_DIR=str(directory / "metrics"),
            # Room for a fuzzer: see the module's docstring.
            API_THROTTLE_ANON_RATE="100000/min",
            API_THROTTLE_USER_RATE="100000/min",
            API_THROTTLE_NOT_FOUND_RATE="100000/hour",
            AXES_FAILURE_LIMIT="100000",
            JWT_ACCESS_TOKEN_MINUTES="60",
        )

    def start(self) -> None:
        self.stack.start(
            "gunicorn",
            [str(BIN / "gunicorn"), "-c", "deploy/gunicorn.conf.py", "bankcore.wsgi:application"],
            env=self.env,
        )
        self.stack.wait_for("gunicorn /health", lambda: http(f"{self.url}/health").status == 200, timeout=90)

    def call(self, method: str, path: str, *, token: str | None = None, **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("headers", {}))
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return http(f"{self.url}{path}", method=method, headers=headers, timeout=60, **kwargs)

    def login(self, username: str) -> dict[str, str]:
        answer = self.call("POST", "/api/v1/auth/token/", body={"username": username, "password": PASSWORD})
        assert answer.status == 200, answer.body
        return dict(answer.json())


# One per test: each test's database is flushed after it, content types included, whose ids a
# server kept from an earlier test would name in its audit rows.
@pytest.fixture
def live(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    if not ledger_servers() or redis_server() is None:
        pytest.skip("needs the MariaDB and Redis servers the test plugin starts")
    server = LiveServer(tmp_path_factory.mktemp("contract"))
    server.start()
    try:
        yield server
    finally:
        server.stack.stop()


def test_the_schema_validates_without_a_warning(tmp_path):
    generated = run_manage(
        "spectacular", "--validate", "--fail-on-warn", "--format", "openapi-json", "--file", str(tmp_path / "s.json")
    )
    assert generated.returncode == 0, generated.stdout + generated.stderr
    assert "warning" not in (generated.stdout + generated.stderr).lower(), generated.stderr
    schema = json.loads((tmp_path / "s.json").read_text())
    # Every 2xx has a body schema, the token pair's included; a 204 (a revoke) has no body at all.
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status.startswith("2") and status != "204":
                    assert "schema" in response.get("content", {}).get("application/json", {}), (method, path, status)


def partner(username: str, *numbers: str) -> Any:
    """A partner linked to ``numbers`` whose password the production settings can check (the
    suite's own users are hashed with MD5, which they do not accept)."""
    user = api_user(username, links=numbers)
    user.password = make_password(PASSWORD, hasher="pbkdf2_sha256")
    user.save(update_fields=["password"])
    return user


def _dictionary(values: list[str]) -> str:
    return "values = [" + ", ".join(json.dumps(value) for value in values) + "]"


def test_schemathesis_finds_no_failure_and_no_warning(live, make_account, actor, api_throttle_reset, tmp_path):
    # given: a partner with two accounts (one per ledger), funded by an outsider's account, and
    # transfers into them the partner may reverse (each once: enough that every phase finds one not
    # yet reversed). Every transfer the partner sees stays reversible while its funds are there.
    a1 = make_account("db1", "0.00", holder="Contract one")
    a2 = make_account("db2", "0.00", holder="Contract two")
    c2 = make_account("db2", "50000.00", holder="Contract outsider")
    for account in (a1, a2):
        transfer_create(actor=actor, source_account=c2.number, destination_account=account.number, amount="20000.00")
    made = [
        str(transfer_create(actor=actor, source_account=c2.number, destination_account=a2.number, amount="1.00").id)
        for _ in range(SEED_TRANSFERS)
    ]
    partner("contract-partner", a1.number, a2.number)
    tokens = [live.login("contract-partner") for _ in range(3)]

    # Known values, drawn in place of generated ones, so that valid requests reach real accounts
    # (a made-up number is a 404): half the time, and a transfer id always one of the seeds, which
    # the partner may reverse. The stateful phase follows the links of the transfers it makes:
    # create, then read or reverse.
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        textwrap.dedent(
            f"""\
            hooks = "bankcore.testing.contract_hooks"
            seed = 1
            [generation]
            max-examples = {SCHEMATHESIS_MAX_EXAMPLES}
            database = "none"
            [warnings]
            fail-on = true
            [checks.positive_data_acceptance]
            # A well-formed request refused by a business rule (funds, limits, account state) is 422.
            expected-statuses = ["2xx", "401", "403", "404", "409", "422"]
            [dictionaries.own]
            {_dictionary([a1.number, a2.number])}
            [dictionaries.other]
            {_dictionary([c2.number, a2.number])}
            [dictionaries.amount]
            {_dictionary(["0.01", "1.00", "2.50"])}
            [dictionaries.transfer]
            {_dictionary(made)}
            [dictionaries.username]
            {_dictionary(["contract-partner"])}
            [dictionaries.password]
            {_dictionary([PASSWORD])}
            [dictionaries.refresh]
            {_dictionary([token["refresh"] for token in tokens])}
            [parameters]
            "body.source_account" = {{ dictionary = "own", probability = 0.5 }}
            "body.destination_account" = {{ dictionary = "other", probability = 0.5 }}
            "body.amount" = {{ dictionary = "amount", probability = 0.5 }}
            "body.username" = {{ dictionary = "username", probability = 0.5 }}
            "body.password" = {{ dictionary = "password", probability = 0.5 }}
            "body.refresh" = {{ dictionary = "refresh", probability = 0.5 }}
            "path.number" = {{ dictionary = "own", probability = 0.5 }}
            "path.transfer_id" = {{ dictionary = "transfer", probability = 1.0 }}
            "query.account" = {{ dictionary = "own", probability = 0.5 }}
            """
        )
    )
    before = balances(a1, a2, c2)

    # when
    run = subprocess.run(
        [
            str(BIN / "schemathesis"),
            "--config-file",
            str(config),
            "run",
            f"{live.url}/api/schema/",
            "--url",
            live.url,
            "--checks",
            "all",
            "--header",
            f"Authorization: Bearer {tokens[0]['access']}",
            # One worker: CPython 3.11's compiler is not thread-safe under schemathesis's coverage
            # phase (SystemError: AST constructor recursion depth mismatch).
            "--workers",
            "1",
            "--no-color",
            "--report",
            "junit",
            "--report-dir",
            str(tmp_path / "report"),
        ],
        env={**subprocess_env(), "PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300 + 30 * SCHEMATHESIS_MAX_EXAMPLES,
    )

    # then
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-20000:]
    assert not re.search(r"warning", output, re.IGNORECASE), output[-20000:]
    # Money moved (the fuzzer made transfers) and the books balance (the autouse fixture checks).
    assert sum(balances(a1, a2, c2)) == sum(before)


def test_a_client_generated_from_the_schema_logs_in_and_makes_a_transfer(live, make_account, tmp_path):
    # given: the schema, and a client generated from it with no warning
    source = make_account("db1", "100.00", holder="SDK source")
    destination = make_account("db2", "0.00", holder="SDK destination")
    partner("sdk-partner", source.number)
    (tmp_path / "schema.json").write_bytes(live.call("GET", "/api/schema/?format=json").body)
    (tmp_path / "config.yaml").write_text(
        "project_name_override: bankcore-client\npackage_name_override: bankcore_client\npost_hooks: []\n"
    )
    generated = subprocess.run(
        [
            str(BIN / "openapi-python-client"),
            "generate",
            "--path",
            str(tmp_path / "schema.json"),
            "--config",
            str(tmp_path / "config.yaml"),
            "--output-path",
            str(tmp_path / "client"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert generated.returncode == 0, generated.stdout + generated.stderr
    assert "warning" not in (generated.stdout + generated.stderr).lower(), generated.stdout + generated.stderr
    sys.path.insert(0, str(tmp_path / "client"))
    try:
        client_package = importlib.import_module("bankcore_client")
        token_create = importlib.import_module("bankcore_client.api.auth.auth_token_create")
        transfers_create = importlib.import_module("bankcore_client.api.transfers.transfers_create")
        models = importlib.import_module("bankcore_client.models")

        # when: it logs in and makes a transfer
        anonymous = client_package.Client(base_url=live.url)
        tokens = token_create.sync(
            client=anonymous,
            body=models.PartnerTokenObtainPairRequest(username="sdk-partner", password=PASSWORD),
        )
        client = client_package.AuthenticatedClient(base_url=live.url, token=tokens.access)
        transfer = transfers_create.sync(
            client=client,
            body=models.TransferCreateInputRequest(
                source_account=source.number, destination_account=destination.number, amount="12.50"
            ),
            idempotency_key="sdk-1",
        )
    finally:
        sys.path.remove(str(tmp_path / "client"))
        for name in [name for name in sys.modules if name.startswith("bankcore_client")]:
            del sys.modules[name]

    # then
    assert isinstance(transfer, models.TransferOutput), transfer
    assert transfer.status == models.TransferStatusEnum.COMPLETED
    assert balances(source, destination) == [Decimal("87.50"), Decimal("12.50")]


def _fenced_blocks(language: str) -> list[str]:
    text = (ROOT / "docs" / "api.md").read_text()
    return re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)


@pytest.mark.parametrize("language", ["sh", "python"])
def test_the_quick_start_in_docs_api_md_runs_as_written(live, make_account, tmp_path, language):
    # given: the partner the quick start speaks of
    source = make_account("db1", "100.00", holder="Quick start source")
    destination = make_account("db2", "0.00", holder="Quick start destination")
    partner("quick-start", source.number)
    blocks = _fenced_blocks(language)
    assert len(blocks) == 1, f"docs/api.md has {len(blocks)} {language} blocks"
    script = tmp_path / ("quick_start.sh" if language == "sh" else "quick_start.py")
    script.write_text(("set -eu\n" if language == "sh" else "") + blocks[0])

    # when
    run = subprocess.run(
        ["bash", str(script)] if language == "sh" else [sys.executable, str(script)],
        env={
            **subprocess_env(),
            "BANKCORE_URL": live.url,
            "BANKCORE_USER": "quick-start",
            "BANKCORE_PASSWORD": PASSWORD,
            "BANKCORE_SOURCE": source.number,
            "BANKCORE_DESTINATION": destination.number,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )

    # then: one transfer, made once though sent twice, and the statement shows it
    assert run.returncode == 0, run.stdout + run.stderr
    assert balances(source, destination) == [Decimal("98.75"), Decimal("1.25")]
    assert source.number in run.stdout
    assert "-1.25" in run.stdout
