"""Chaos for the self-healing proofs (``transfers/tests/system/test_chaos.py``, ``bench/chaos.py``).

Partner clients keep posting cross-ledger transfers through the HTTP API, each request under an
``Idempotency-Key`` of its own, retried under that same key after a 5xx or no answer at all, as a
partner's integration does. Meanwhile servers fail: SIGKILL and a restart on the same port and
data directory, or SIGSTOP for a while and SIGCONT. The app's processes (gunicorn, the recovery
loop) are left alone: whatever they need after a fault, they must do themselves.

What is measured against each fault: its *heal time* (from the server answering again to the first
request made after that which succeeded) and the requests that failed although they were made
``HEAL_BOUND`` seconds or more after the server's return. What is checked at rest: every key
answered without a 5xx in the end, each key one transfer, every acknowledged transfer final as
answered, the balances explained by the completed transfers, nothing pending.

Test support, so it may read the apps' models; it imports them inside the functions, since the
benchmark loads this module before Django is set up.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from http.client import HTTPException
from typing import Any

from bankcore.faults import FAULT_EXIT_CODE
from bankcore.testing.native import ROOT, http
from bankcore.testing.servers import MariaDBServer, RedisServer

# After a server answers again, new requests touching it must succeed within this many seconds.
HEAL_BOUND = 5.0

NO_ANSWER = 0  # the status recorded when the connection failed or timed out


def retryable(status: int) -> bool:
    """What a partner retries under the same key: no answer, or a server error (503 above all)."""
    return status == NO_ANSWER or status >= 500


@dataclass
class Attempt:
    """One HTTP exchange; times are ``time.monotonic()``."""

    key: str
    started: float
    finished: float
    status: int
    # The problem's code for an error, the transfer's status for a 2xx, the exception for no answer.
    outcome: str
    transfer_id: str = ""


@dataclass
class Request:
    """One transfer a partner means to make once: one key, one body, its attempts in order."""

    key: str
    source: str
    destination: str
    amount: Decimal
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def last(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    @property
    def answered(self) -> bool:
        """Answered without a 5xx in the end (the partner stopped retrying because it had an answer)."""
        return self.last is not None and not retryable(self.last.status)


class PartnerLoad:
    """``clients`` threads, each making one request after another (a new key once the last one has
    its answer) from one of ``accounts`` (by ledger; all linked to the partner whose ``token`` is
    sent) to one of another ledger. ``rate`` bounds the requests per
    second of all clients together (first attempts only); retries wait ``retry_pause``. A key
    retried for ``give_up_after`` seconds without an answer is given up (and reported)."""

    def __init__(
        self,
        *,
        url: str,
        token: Callable[[], str],
        accounts: Mapping[str, Sequence[str]],
        clients: int = 4,
        rate: float = 0.0,
        amounts: tuple[int, int] = (100, 10_000),
        retry_pause: float = 0.2,
        give_up_after: float = 60.0,
        timeout: float = 30.0,
        seed: int = 0,
    ) -> None:
        if len(accounts) < 2:
            raise ValueError("cross-ledger transfers need accounts in two ledgers at least")
        self.url = url.rstrip("/") + "/api/v1/transfers/"
        self.token = token
        self.accounts = {ledger: list(numbers) for ledger, numbers in accounts.items()}
        self.clients = clients
        self.rate = rate
        self.amounts = amounts
        self.retry_pause = retry_pause
        self.give_up_after = give_up_after
        self.timeout = timeout
        self.seed = seed
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for index in range(self.clients):
            thread = threading.Thread(target=self._client, args=(index,), name=f"partner-{index}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """No new keys; each client finishes its current key (an answer, or given up)."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=timeout if timeout is not None else self.give_up_after + self.timeout + 5)

    def attempts(self) -> list[Attempt]:
        with self._lock:
            return sorted((a for r in self.requests for a in r.attempts), key=lambda a: a.started)

    def snapshot(self) -> list[Request]:
        with self._lock:
            return list(self.requests)

    def _client(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        ledgers = sorted(self.accounts)
        pace = self.clients / self.rate if self.rate > 0 else 0.0
        due = time.monotonic() + rng.random() * pace
        while not self._stopping.is_set():
            if pace:
                delay = due - time.monotonic()
                if delay > 0 and self._stopping.wait(delay):
                    break
                due = max(due + rng.expovariate(1 / pace), time.monotonic() - pace)
            a, b = rng.sample(ledgers, 2)
            request = Request(
                key=uuid.uuid4().hex,
                source=rng.choice(self.accounts[a]),
                destination=rng.choice(self.accounts[b]),
                amount=Decimal(rng.randint(*self.amounts)) / 100,
            )
            with self._lock:
                self.requests.append(request)
            self._carry_out(request)

    def _carry_out(self, request: Request) -> None:
        body = {
            "source_account": request.source,
            "destination_account": request.destination,
            "amount": str(request.amount),
        }
        first = time.monotonic()
        while True:
            attempt = self._post(request.key, body)
            with self._lock:
                request.attempts.append(attempt)
            if not retryable(attempt.status) or time.monotonic() - first > self.give_up_after:
                return
            time.sleep(self.retry_pause)

    def _post(self, key: str, body: dict[str, str]) -> Attempt:
        headers = {"Authorization": f"Bearer {self.token()}", "Idempotency-Key": key}
        started = time.monotonic()
        try:
            response = http(self.url, method="POST", body=body, headers=headers, timeout=self.timeout)
        except (OSError, HTTPException) as error:
            return Attempt(key, started, time.monotonic(), NO_ANSWER, type(error).__name__)
        finished = time.monotonic()
        try:
            data: Any = json.loads(response.body)
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        if 200 <= response.status < 300:
            return Attempt(
                key, started, finished, response.status, str(data.get("status", "")), str(data.get("id", ""))
            )
        return Attempt(key, started, finished, response.status, str(data.get("code", "")))


# --- Faults ---------------------------------------------------------------------------------------

Server = MariaDBServer | RedisServer


@dataclass
class Fault:
    """One fault and its times (``time.monotonic()``; ``back_at`` is the wall clock of ``back``,
    for comparing with the rows' timestamps)."""

    kind: str  # "kill" or "stop"
    target: str
    injected: float = 0.0
    back: float = 0.0
    back_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def name(self) -> str:
        return f"{'SIGKILL + restart' if self.kind == 'kill' else 'SIGSTOP + SIGCONT'} of {self.target}"


def _signal(server: Server, signum: signal.Signals) -> None:
    if server.process is None or server.process.poll() is not None:
        raise RuntimeError(f"{server} is not running")
    server.process.send_signal(signum)


def kill_and_restart(server: Server, *, target: str, down: float) -> Fault:
    """SIGKILL (a crash: no flush, no goodbye to clients), ``down`` seconds, then the same server
    again on its port and data directory. Returns once it answers."""
    fault = Fault("kill", target, injected=time.monotonic())
    assert server.process is not None
    _signal(server, signal.SIGKILL)
    server.process.wait(timeout=30)
    time.sleep(down)
    server.start()
    fault.back, fault.back_at = time.monotonic(), datetime.now(UTC)
    return fault


def stop_and_continue(server: Server, *, target: str, seconds: float) -> Fault:
    """SIGSTOP: the server holds its connections open and answers nothing (a hung machine, a long
    GC pause, a network partition that drops packets) for ``seconds``; then SIGCONT."""
    fault = Fault("stop", target, injected=time.monotonic())
    _signal(server, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        _signal(server, signal.SIGCONT)
    fault.back, fault.back_at = time.monotonic(), datetime.now(UTC)
    return fault


class DyingCoordinators:
    """Coordinators that die mid-transfer, on demand. One process sets Django up once and waits;
    each ``transfer()`` makes it fork a child that makes one transfer and exits hard at the fault
    point ``at`` (``bankcore.faults``; ``env`` must switch fault points on). Made just before a
    fault, such a transfer is left to the recovery worker alone, and its grace or deadline runs out
    while the server is away: proof that the worker works again after the server's return. (A
    process per transfer would set Django up each time: seconds on a busy machine.)"""

    def __init__(self, *, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _DYING],
            env=env,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def transfer(self, *, source: str, destination: str, amount: str, at: str) -> None:
        """Returns once the coordinator has died at ``at``; raises if it ended any other way."""
        assert self.process.stdin is not None and self.process.stdout is not None
        said: list[str] = []
        try:
            self.process.stdin.write(f"{at} {source} {destination} {amount}\n")
            self.process.stdin.flush()
        except BrokenPipeError:  # it died before: its output says why
            pass
        while line := self.process.stdout.readline():
            if line.startswith("exit "):
                status = int(line.split()[1])
                if status != FAULT_EXIT_CODE:
                    raise RuntimeError(f"the transfer to die at {at} ended with {status}:\n{''.join(said)[-2000:]}")
                return
            said.append(line)
        raise RuntimeError(f"the dying coordinators' process exited:\n{''.join(said)[-2000:]}")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


# Forks before any connection is opened: each child opens its own. A child stuck for a minute is
# ended by SIGALRM, and its parent says so.
_DYING = """
import os
import signal
import sys
import django
django.setup()
from bankcore.actors import Actor, Channel
from transfers.services import transfer_create
while line := sys.stdin.readline():
    at, source, destination, amount = line.split()
    pid = os.fork()
    if pid == 0:
        os.environ["BANKCORE_FAULT_AT"] = at
        signal.alarm(60)
        try:
            transfer_create(
                actor=Actor.system(Channel.COMMAND, "chaos-crash"),
                source_account=source,
                destination_account=destination,
                amount=amount,
            )
        except BaseException as error:
            print(f"{type(error).__name__}: {error}", flush=True)
            os._exit(3)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    print(f"exit {os.waitstatus_to_exitcode(status)}", flush=True)
"""


# --- What a fault did to the requests --------------------------------------------------------------


def heal_time(fault: Fault, attempts: Iterable[Attempt]) -> float | None:
    """Seconds from the server answering again to the first request made after that which
    succeeded (201), or None if none did. Every request is a cross-ledger transfer, so each one
    touches every server (with two ledgers) and Redis."""
    times = [a.finished - fault.back for a in attempts if a.started >= fault.back and a.status == 201]
    return min(times) if times else None


def late_failures(fault: Fault, attempts: Iterable[Attempt], *, until: float) -> list[Attempt]:
    """Requests made ``HEAL_BOUND`` seconds or more after the server answered again, and answered
    before ``until`` (the next fault, or the end), that failed: a 5xx or no answer."""
    return [a for a in attempts if a.started >= fault.back + HEAL_BOUND and a.finished < until and retryable(a.status)]


def server_errors(attempts: Iterable[Attempt]) -> int:
    return sum(1 for a in attempts if retryable(a.status))


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def outcomes(attempts: Iterable[Attempt]) -> str:
    """How the requests were answered, most frequent first: "201 completed ×812, 503 ledger_unavailable ×40"."""
    counts = Counter(f"{a.status} {a.outcome}".strip() for a in attempts)
    return ", ".join(f"{what} ×{n}" for what, n in counts.most_common())


def describe(attempts: Sequence[Attempt], limit: int = 10) -> str:
    return "; ".join(f"{a.status} {a.outcome} after {a.finished - a.started:.1f}s" for a in attempts[:limit])


# --- The books, read from the databases (the caller's own Django connections) ----------------------


def transfers_unfinished(*, created_before: datetime) -> list[str]:
    """Transfers created before the given time that are neither completed nor aborted, and legs
    prepared before it that are still PREPARED: what an outage left pending."""
    from django.conf import settings

    from transfers.models import Transfer, TransferLeg

    final = [Transfer.Status.COMPLETED, Transfer.Status.ABORTED]
    found = [
        f"transfer {pk} {status}"
        for pk, status in Transfer.objects.filter(created_at__lt=created_before)
        .exclude(status__in=final)
        .values_list("pk", "status")
    ]
    for ledger in settings.LEDGERS:
        found += [
            f"leg {transfer_id}/{leg} prepared in {ledger}"
            for transfer_id, leg in TransferLeg.objects.using(ledger)
            .filter(created_at__lt=created_before, state=TransferLeg.State.PREPARED)
            .values_list("transfer_id", "leg")
        ]
    return found


def settle_time(fault: Fault, *, bound: float, poll: float = 0.25) -> tuple[float | None, list[str]]:
    """Seconds from the server answering again until nothing is left of what the outage left
    pending (``transfers_unfinished`` of before its return), read every ``poll`` seconds; or None
    and what is left, once ``bound`` seconds have passed. Reads on the caller's own connections,
    which the fault may have broken: those are closed and opened again."""
    from django.db import DatabaseError, connections

    while True:
        try:
            left = transfers_unfinished(created_before=fault.back_at)
        except DatabaseError as error:
            connections.close_all()
            left = [f"the books could not be read: {error}"]
        else:
            if not left:
                return time.monotonic() - fault.back, []
        if time.monotonic() > fault.back + bound:
            return None, left
        time.sleep(poll)


@dataclass
class Books:
    """Every account of every ledger: Σ posted, the pending counters, the overdrawn ones."""

    posted: Decimal
    pending: Decimal
    overdrawn: list[str]


def books_read() -> Books:
    from django.conf import settings
    from django.db.models import F, Q, Sum

    from accounts.models import Account

    posted = pending = Decimal("0.00")
    overdrawn: list[str] = []
    for ledger in settings.LEDGERS:
        accounts = Account.objects.using(ledger)
        sums = accounts.aggregate(posted=Sum("posted"), debits=Sum("pending_debits"), credits=Sum("pending_credits"))
        posted += sums["posted"] or 0
        pending += (sums["debits"] or 0) + (sums["credits"] or 0)
        overdrawn += [
            f"{number} ({ledger})"
            for number in accounts.filter(Q(allow_overdraft=False), posted__lt=F("pending_debits")).values_list(
                "number", flat=True
            )
        ]
    return Books(posted=posted, pending=pending, overdrawn=overdrawn)


def requests_check(requests: Sequence[Request], *, opening: dict[str, Decimal]) -> list[str]:
    """What the partner was told, against what the databases hold; an empty list when all agree.

    Every key answered without a 5xx in the end; all of a key's 2xx answers name one transfer, and
    a key has one transfer at most; a transfer acknowledged 201 is final in the books as it was
    answered (completed, or aborted with a reason); every transfer is final; and each account's
    balance is its opening balance moved by exactly its completed transfers."""
    from accounts.models import Account
    from accounts.numbers import account_number_parse
    from transfers.models import Transfer

    problems: list[str] = []
    keys = [r.key for r in requests]
    rows: dict[str, list[Transfer]] = {}
    for start in range(0, len(keys), 1000):
        for transfer in Transfer.objects.filter(idempotency_key__in=keys[start : start + 1000]):
            rows.setdefault(str(transfer.idempotency_key), []).append(transfer)
    for request in requests:
        transfers = rows.get(request.key, [])
        if not request.answered:
            last = request.last
            problems.append(
                f"key {request.key}: no answer without a 5xx after {len(request.attempts)} attempts "
                f"(last: {last.status if last else '-'} {last.outcome if last else ''})"
            )
        if len(transfers) > 1:
            problems.append(f"key {request.key}: {len(transfers)} transfers")
        ids = {a.transfer_id for a in request.attempts if 200 <= a.status < 300}
        if len(ids) > 1:
            problems.append(f"key {request.key}: answered with several transfers {sorted(ids)}")
        for attempt in request.attempts:
            if attempt.status != 201:
                continue
            acknowledged = next((t for t in transfers if str(t.pk) == attempt.transfer_id), None)
            if acknowledged is None:
                problems.append(f"key {request.key}: acknowledged transfer {attempt.transfer_id} is not in the books")
            elif acknowledged.status != attempt.outcome:
                problems.append(
                    f"key {request.key}: answered {attempt.outcome}, the books say {acknowledged.status} "
                    f"({acknowledged.pk})"
                )
            elif acknowledged.status == Transfer.Status.ABORTED and not acknowledged.failure_code:
                problems.append(f"key {request.key}: aborted without a reason ({acknowledged.pk})")
        problems += [
            f"key {request.key}: transfer {transfer.pk} left {transfer.status}"
            for transfer in transfers
            if not transfer.is_final
        ]
    expected = dict(opening)
    for made in rows.values():
        for transfer in made:
            if transfer.status == Transfer.Status.COMPLETED:
                expected[transfer.source_account] -= transfer.amount
                expected[transfer.destination_account] += transfer.amount
    by_ledger: dict[str, list[str]] = {}
    for account_number in expected:
        by_ledger.setdefault(account_number_parse(account_number).ledger, []).append(account_number)
    for ledger, numbers in by_ledger.items():
        for number, posted, debits, credits in (
            Account.objects.using(ledger)
            .filter(number__in=numbers)
            .values_list("number", "posted", "pending_debits", "pending_credits")
        ):
            if posted != expected[str(number)]:
                problems.append(
                    f"account {number}: posted {posted}, its completed transfers make {expected[str(number)]}"
                )
            if debits or credits:
                problems.append(f"account {number}: pending {debits} out, {credits} in")
    return problems
