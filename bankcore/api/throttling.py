"""Per-client throttling for the partner API, counted in the default cache (Redis whenever
``REDIS_HOST`` is set, so every replica shares one count).

DRF's own throttles keep each client's request times as a list in the cache: a read and a write
per request, the list pickled both ways (as long as the rate: 600 entries at 600/min), and two
concurrent requests of one client read the same list and each write back its own, so one of
them is not counted. Here a client's allowance is the **generic cell rate algorithm** (GCRA, the
leaky bucket as a meter): for a rate of N per period D, one request is due every T = D / N, and a
client may be up to D − T ahead of that schedule, so N requests may come at once, and after that
one every T. The state is one number per client, the time its next request is due; in Redis it
is read, checked and moved by one Lua script, atomic on the server and timed by the server's
clock (replicas' clocks may differ), in one round trip. A refused request moves nothing, so, as
with DRF's, only the requests let through are counted; ``Retry-After`` is the time until the next
one fits, never more than the period.

The rates are read at each request (DRF's classes copy them once, at import), so a changed
setting, and a test's ``override_settings``, take effect.

When Redis does not answer, the throttle **fails open to this process's own meter**: the same
algorithm, counted in memory, so a client is still held to the rate by each process (at most the
rate times the number of app processes in all) and money keeps moving. Refusing every request
instead would turn a cache outage into a payment outage, while the throttle guards capacity, not
money (the amount and daily limits are checked in the ledgers, under the account's lock). Redis is
tried again ``REDIS_RETRY_SECONDS`` after it failed, not by every request (a connect timeout
each). docs/operations.md, "When Redis is down".
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.core.cache import caches
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rest_framework.settings import api_settings
from rest_framework.throttling import AnonRateThrottle, SimpleRateThrottle, UserRateThrottle

from bankcore.actors import client_ip

logger = logging.getLogger(__name__)


# KEYS[1]: the client's key; ARGV: T, D, the slack (_SLACK) in seconds, and "1" to only look
# (count nothing). Returns {1, ""} if the request fits, else {0, seconds to wait}, as strings
# (Redis turns a Lua number into an integer).
_GCRA = """
local interval, period, slack = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local peek = ARGV[4] == '1'
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local due = tonumber(redis.call('GET', KEYS[1]) or '') or now
if due < now then due = now end
local wait = due + interval - period - now
if wait > slack then return {0, tostring(wait)} end
if peek then return {1, ''} end
redis.call('SET', KEYS[1], string.format('%.6f', due + interval), 'PX', math.ceil((due + interval - now) * 1000))
return {1, ''}
"""
_script: Any = None
# A millisecond of slack in both paths: the N-th request of a burst waits exactly 0 on paper, and
# the rounding of the times stored (to the microsecond) and added up must not refuse it.
_SLACK = 0.001
REDIS_RETRY_SECONDS = 5.0
_redis_failed_at = float("-inf")  # time.monotonic() of Redis's last failure in this process
_local_lock = threading.Lock()
_local_due: dict[str, float] = {}  # this process's meter: each client's next due time
_LOCAL_KEYS_MAX = 100_000


def _gcra(key: str, interval: float, period: float, *, peek: bool = False) -> float:
    """0 if one more request fits now (and it is counted, unless ``peek``), else the seconds
    until one does."""
    global _script, _redis_failed_at
    cache = caches["default"]
    if (
        cache.__class__.__module__.startswith("django_redis")
        and time.monotonic() - _redis_failed_at >= REDIS_RETRY_SECONDS
    ):
        client = cache.client.get_client(write=True)  # type: ignore[attr-defined]  # django_redis only
        if _script is None:
            _script = client.register_script(_GCRA)  # EVALSHA, loaded again if the server lost it
        try:
            allowed, wait = _script(
                keys=[cache.make_key(key)],
                args=[repr(interval), repr(period), repr(_SLACK), "1" if peek else "0"],
                client=client,
            )
        except (RedisConnectionError, RedisTimeoutError) as exc:
            _redis_failed_at = time.monotonic()
            logger.warning("throttle: Redis did not answer (%s); counting in this process", exc.__class__.__name__)
        else:
            return 0.0 if int(allowed) else float(wait)
    return _local_gcra(key, interval, period, peek=peek)


def _local_gcra(key: str, interval: float, period: float, *, peek: bool = False) -> float:
    """``_gcra`` in this process's memory: a development run's (no Redis), or while Redis is down."""
    with _local_lock:
        now = time.time()
        due = max(_local_due.get(key, now), now)
        wait = due + interval - period - now
        if wait > _SLACK:
            return wait
        if peek:
            return 0.0
        if len(_local_due) >= _LOCAL_KEYS_MAX:
            # A client whose due time has passed has no state worth keeping (it is "now").
            for stale in [k for k, v in _local_due.items() if v <= now]:
                del _local_due[stale]
        _local_due[key] = due + interval
        return 0.0


class CellRateThrottle(SimpleRateThrottle):
    # Set by SimpleRateThrottle.__init__ from the rate (``parse_rate``), absent from DRF's stubs.
    num_requests: int | None
    duration: int | None

    def get_ident(self, request: Any) -> str:
        """An anonymous client's address as ``client_ip`` trusts it (``TRUSTED_PROXIES``): a forged
        X-Forwarded-For from anyone else is no fresh bucket."""
        return client_ip(request) or ""

    def get_rate(self) -> str | None:
        rate = api_settings.DEFAULT_THROTTLE_RATES.get(str(self.scope))
        return None if rate is None else str(rate)

    def allow_request(self, request: Any, view: Any) -> bool:
        return self._check(request, view, peek=False)

    def _check(self, request: Any, view: Any, *, peek: bool) -> bool:
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        limit, period = int(self.num_requests or 1), float(self.duration or 1)
        # A key of its own: DRF's throttle kept a pickled list under the plain one, which workers of
        # the previous version still write during a rolling update.
        self._wait = _gcra(f"{key}:gcra", period / limit, period, peek=peek)
        return self._wait == 0.0

    def wait(self) -> float | None:
        return getattr(self, "_wait", None) or None


class PartnerRateThrottle(CellRateThrottle, UserRateThrottle):
    """An authenticated client by its user id; an anonymous one by its address."""


class AnonymousRateThrottle(CellRateThrottle, AnonRateThrottle):
    """Anonymous requests only (the token endpoint), by address."""


class NotFoundRateThrottle(CellRateThrottle, UserRateThrottle):
    """The answers that say an account does not exist, per partner (scope ``not_found``).

    A transfer may go to any account of the bank, so its 404 ``account_not_found`` tells a
    partner which numbers exist, and serials are sequential. ``allow_request`` only looks (the
    view asks before it moves anything); ``record`` counts one such answer. Once a partner has had
    its allowance of them, every transfer it posts is refused 429 ``throttled`` until the
    allowance refills: refusing only the not-found answers would still tell them apart."""

    scope = "not_found"

    def allow_request(self, request: Any, view: Any) -> bool:
        return self._check(request, view, peek=True)

    def record(self, request: Any, view: Any) -> None:
        self._check(request, view, peek=False)
