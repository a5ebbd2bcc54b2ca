"""The simulated users of the Initiative Dashboard, as abstract Locust classes.

The locustfile declares one concrete subclass of each (so Locust lists them
by name) and nothing else; the behaviour lives here, where it is imported,
type-checked and tested like the rest of cachelab.

Every user:

* talks to ``host`` (default http://127.0.0.1:8000, or ``--host``);
* is a member of one tenant, chosen by Zipf popularity among the ``--tenants``
  the app was seeded with, and logs in as one of that tenant's seeded users
  (e-mails follow :func:`cachelab.app.seed.seed_accounts`; the password is
  ``CACHELAB_SEED_PASSWORD`` or the file ``cachelab serve`` keeps it in, see
  :mod:`cachelab.app.seed_password`). Users that write log in with a role that
  may write. The session cookie then goes with every request, and the app checks
  it on every request, as a real dashboard does. A login answered 429 is retried
  after its ``Retry-After`` (an expected 429); a 401 later on (an expired
  session) logs in again;
* sends its own ``X-Forwarded-For`` address from the TEST-NET ranges
  (RFC 5737; a header only, no traffic goes there). The app believes it only
  when told the generator is a proxy (``CACHELAB_TRUSTED_PROXIES=127.0.0.1``,
  which :func:`~cachelab.loadtest.runner.run_scenario` sets for the app it
  starts); then the per-address limits see many clients, as in production,
  instead of one address for the whole load;
* chooses pages and rows by Zipf popularity with a per-user seed derived from
  ``--seed``, so runs are comparable request for request;
* waits ``--think-time`` between tasks, or, under ``--shape constant``, keeps
  to a :class:`~cachelab.loadtest.pacing.Pacer` schedule and reports how late
  each task started (the ``cachelab_lag`` request context).

Expected 429s (the abusive client) are marked successes and counted as
``rate_limited_expected``; a 429 anywhere else is a failure.
"""

from __future__ import annotations

import functools
import itertools
import logging
import random
from typing import Any, ClassVar

import gevent
from locust import FastHttpUser, task
from locust.exception import StopUser

from cachelab.app.db import WRITE_ROLES
from cachelab.app.seed import seed_accounts
from cachelab.app.seed_password import seed_password_for_client
from cachelab.loadtest.options import parse_think_time
from cachelab.loadtest.pacing import Pacer
from cachelab.loadtest.shapes import normalize_shape
from cachelab.loadtest.zipf import ZipfSampler

DEFAULT_HOST = "http://127.0.0.1:8000"
STATUSES = ("in_progress", "planning", "at_risk", "on_hold", "completed")  # by popularity in filters
TERMINAL_JOB_STATES = {"completed", "failed", "dead"}
_TEST_NETS = ("198.51.100", "203.0.113", "192.0.2")  # RFC 5737 documentation ranges
_user_numbers = itertools.count()
LOGIN_ATTEMPTS = 5  # a login refused with 429 is retried after Retry-After, this many times at most
MAX_RETRY_WAIT = 30.0
log = logging.getLogger("cachelab.loadtest")

# Route templates: what results, thresholds and Locust's tables are keyed by.
TENANTS = "/api/tenants"
USERS = "/api/tenants/{t}/users"
KPIS = "/api/tenants/{t}/kpis"
AREAS = "/api/tenants/{t}/areas"
STATS = "/api/tenants/{t}/stats"
INITIATIVES = "/api/tenants/{t}/initiatives"
INITIATIVE = "/api/tenants/{t}/initiatives/{id}"
LOGIN = "/api/login"
ME = "/api/me"
DASHBOARD = "/api/dashboard"
REPORTS = "/api/tenants/{t}/reports"
JOB = "/api/jobs/{id}"
LEADERBOARD = "/api/tenants/{t}/leaderboard"


@functools.cache
def seed_password() -> str | None:
    """The seeded users' password (read once per process); None when it cannot be found."""
    password = seed_password_for_client()
    if password is None:
        log.error(
            "cachelab: no seed password: set CACHELAB_SEED_PASSWORD to the password the app's users "
            "were seeded with (cachelab serve on this machine keeps a generated one where Locust finds it)"
        )
    return password


def retry_after(response: Any) -> float:
    try:
        return min(MAX_RETRY_WAIT, max(0.0, float(response.headers.get("Retry-After") or 1)))
    except ValueError:
        return 1.0


def client_address(n: int) -> str:
    """The ``n``-th simulated client's address: 762 distinct TEST-NET hosts, then reused."""
    net, host = divmod(n % (len(_TEST_NETS) * 254), 254)
    return f"{_TEST_NETS[net]}.{host + 1}"


class DashboardUser(FastHttpUser):
    """Shared plumbing: identity, log-in, Zipf choices, think time or pacing, JSON helpers."""

    abstract = True
    host = DEFAULT_HOST
    mix_key: ClassVar[str] = ""
    paced: ClassVar[bool] = True  # follows the --shape constant schedule
    writes: ClassVar[bool] = False  # logs in with a role that may write
    network_timeout = 10.0
    connection_timeout = 5.0

    def __init__(self, environment: Any) -> None:
        opts = environment.parsed_options
        runner = environment.runner
        worker = int(getattr(runner, "worker_index", 0) or 0)
        self.number = next(_user_numbers)
        # 128 addresses per worker process before two users share one (and a rate-limit bucket).
        self.address = client_address(worker * 128 + self.number)
        self.default_headers = {
            "X-Forwarded-For": self.address,
            "User-Agent": f"cachelab-locust/{self.number}",
        }
        super().__init__(environment)
        seed = getattr(opts, "cachelab_seed", 1)
        self.rng = random.Random(f"{seed}:{worker}:{self.number}:{type(self).__name__}")
        zipf_s = float(getattr(opts, "cachelab_zipf_s", 1.1))
        self.zipf = ZipfSampler(1, s=zipf_s, seed=self.rng.randrange(2**32))
        self.think = parse_think_time(getattr(opts, "cachelab_think_time", None))
        self.pacer: Pacer | None = None
        self.run_paced = normalize_shape(getattr(opts, "cachelab_shape", "none")) == "constant"
        self.tenants: list[str] = []
        self.my_tenant: str | None = None
        self.email: str | None = None
        self.logged_in = False

    # -- timing ----------------------------------------------------------------
    def wait_time(self) -> float:
        if self.pacer is not None:
            return self.pacer.wait()
        low, high = self.think
        return self.rng.uniform(low, high) if high > 0 else 0.0

    def context(self) -> dict[str, Any]:
        # In a paced run every request gets a corrected latency (lag 0 outside the schedule, e.g.
        # log-in, or for a user that does not pace), so raw and corrected cover the same requests.
        if self.pacer is not None and self.pacer.tasks:
            return {"cachelab_lag": self.pacer.lag()}
        if self.run_paced:
            return {"cachelab_lag": 0.0}
        return {}

    def start_pacing(self) -> None:
        """Under ``--shape constant``: each of the ``-u`` users takes an equal share of the rate."""
        opts = self.environment.parsed_options
        if not self.paced or not self.run_paced:
            return
        rate = float(getattr(opts, "cachelab_arrival_rate", 0) or 0)
        users = int(getattr(opts, "cachelab_pace_users", 0) or getattr(opts, "num_users", 0) or 1)
        if rate > 0:
            self.pacer = Pacer(users / rate, rng=self.rng)
            gevent.sleep(self.pacer.wait())

    # -- identity ----------------------------------------------------------------
    def choose_account(self) -> None:
        """A tenant by Zipf popularity, then one of its seeded users (a writer if this user writes)."""
        tenants_seeded = int(getattr(self.environment.parsed_options, "cachelab_tenants", 5) or 5)
        accounts = seed_accounts(tenants_seeded)
        tenant_ids = sorted({a["tenant_id"] for a in accounts})
        self.my_tenant = self.zipf.choice(tenant_ids)
        mine = [
            a["email"]
            for a in accounts
            if a["tenant_id"] == self.my_tenant and (not self.writes or a["role"] in WRITE_ROLES)
        ]
        self.email = self.rng.choice(mine)

    def login(self) -> bool:
        """POST /api/login; the cookie jar keeps the session. 429s wait out Retry-After (expected)."""
        password = seed_password()
        if password is None or self.email is None:
            raise StopUser()
        for _attempt in range(LOGIN_ATTEMPTS):
            body = {"email": self.email, "password": password}
            with self.client.post(LOGIN, json=body, name=LOGIN, catch_response=True) as response:
                if response.status_code == 429:
                    response.success()  # the app limiting log-ins is doing its job; we wait as told
                    wait = retry_after(response)
                else:
                    self.logged_in = response.status_code == 200
                    return self.logged_in
            gevent.sleep(wait)
        return False

    def relogin_if_expired(self, response: Any) -> None:
        if getattr(response, "status_code", None) == 401:
            self.logged_in = False
            self.login()

    # -- helpers ---------------------------------------------------------------
    def get(self, path: str, name: str) -> Any:
        """GET with the session; a 401 (expired session) logs in again, as a browser would."""
        response = self.client.get(path, name=name)
        self.relogin_if_expired(response)
        return response

    def get_json(self, path: str, name: str) -> Any:
        """GET and decode; None when the request failed (Locust has already counted the failure)."""
        response = self.get(path, name)
        if response.status_code != 200:
            return None
        try:
            return response.json()
        except ValueError:
            return None

    def tenant(self) -> str | None:
        """The user's own tenant, once logged in (every tenant route is only theirs)."""
        return self.my_tenant if self.logged_in else None

    def load_tenants(self) -> None:
        tenants = self.get_json(TENANTS, TENANTS) or []
        self.tenants = sorted(str(t["id"]) for t in tenants if "id" in t)

    def on_start(self) -> None:
        self.choose_account()
        if self.login():
            self.load_tenants()
        self.setup()
        self.start_pacing()

    def setup(self) -> None:
        """Per-type start-up (learn ids) before the first task."""


class ViewerBehaviour(DashboardUser):
    """Logs in as a user of a tenant (any role), then reads the dashboard, the tenant's KPIs and /me."""

    abstract = True
    mix_key = "viewer"

    @task(4)
    def dashboard(self) -> None:
        if self.logged_in:
            self.get(DASHBOARD, DASHBOARD)

    @task(2)
    def kpis(self) -> None:
        if (tenant := self.tenant()) is not None:
            self.get(KPIS.replace("{t}", tenant), KPIS)

    @task(1)
    def me(self) -> None:
        if self.logged_in:
            self.get(ME, ME)


class BrowserBehaviour(DashboardUser):
    """Browses initiative lists (popular pages and filters more often), rows, areas and stats."""

    abstract = True
    mix_key = "browser"

    def setup(self) -> None:
        self.pages: dict[tuple[str, str], int] = {}  # (tenant, filter) -> page count seen
        self.rows: dict[str, list[int]] = {}  # tenant -> initiative ids seen on list pages
        self.areas: dict[str, list[int]] = {}

    def _filter(self, tenant: str) -> tuple[str, str]:
        roll = self.rng.random()
        if roll < 0.15:
            return "status", self.zipf.choice(STATUSES)
        if roll < 0.30 and self.areas.get(tenant):
            return "area_id", str(self.zipf.choice(self.areas[tenant]))
        return "", ""

    @task(6)
    def list_initiatives(self) -> None:
        tenant = self.tenant()
        if tenant is None:
            return
        key, value = self._filter(tenant)
        pages = self.pages.get((tenant, f"{key}={value}"), 1)
        page = self.zipf.sample(pages) + 1
        query = f"?{key}={value}&page={page}" if key else f"?page={page}"
        body = self.get_json(INITIATIVES.replace("{t}", tenant) + query, INITIATIVES)
        if not body:
            return
        size = max(1, int(body.get("page_size") or 1))
        self.pages[(tenant, f"{key}={value}")] = max(1, -(-int(body.get("total") or 0) // size))
        ids = [int(i["id"]) for i in body.get("items", []) if "id" in i]
        if ids and page == 1 and not key:
            self.rows[tenant] = ids

    @task(3)
    def initiative(self) -> None:
        tenant = self.tenant()
        if tenant is None:
            return
        ids = self.rows.get(tenant)
        if not ids:
            self.list_initiatives()
            return
        row = self.zipf.choice(ids)
        self.get(INITIATIVE.replace("{t}", tenant).replace("{id}", str(row)), INITIATIVE)

    @task(1)
    def areas_list(self) -> None:
        tenant = self.tenant()
        if tenant is None:
            return
        areas = self.get_json(AREAS.replace("{t}", tenant), AREAS)
        if isinstance(areas, list):
            self.areas[tenant] = [int(a["id"]) for a in areas if isinstance(a, dict) and "id" in a]

    @task(1)
    def stats(self) -> None:
        if (tenant := self.tenant()) is not None:
            self.get(STATS.replace("{t}", tenant), STATS)

    @task(1)
    def kpis(self) -> None:
        if (tenant := self.tenant()) is not None:
            self.get(KPIS.replace("{t}", tenant), KPIS)


class EditorBehaviour(DashboardUser):
    """Updates initiatives' progress and status (each write invalidates cached lists, KPIs, dashboards)."""

    abstract = True
    mix_key = "editor"
    writes = True

    def setup(self) -> None:
        self.rows: dict[str, list[int]] = {}

    def _rows(self, tenant: str) -> list[int]:
        if tenant not in self.rows:
            body = self.get_json(INITIATIVES.replace("{t}", tenant) + "?page=1", INITIATIVES) or {}
            self.rows[tenant] = [int(i["id"]) for i in body.get("items", []) if "id" in i]
        return self.rows[tenant]

    @task(3)
    def update_progress(self) -> None:
        tenant = self.tenant()
        if tenant is None or not (rows := self._rows(tenant)):
            return
        row = self.zipf.choice(rows)
        body: dict[str, Any] = {"progress": self.rng.randint(0, 100)}
        if self.rng.random() < 0.2:
            body["status"] = self.rng.choice(STATUSES)
        path = INITIATIVE.replace("{t}", tenant).replace("{id}", str(row))
        self.relogin_if_expired(self.client.patch(path, json=body, name=INITIATIVE))

    @task(1)
    def read_back(self) -> None:
        tenant = self.tenant()
        if tenant is None or not (rows := self._rows(tenant)):
            return
        row = self.zipf.choice(rows)
        self.get(INITIATIVE.replace("{t}", tenant).replace("{id}", str(row)), INITIATIVE)


class ReporterBehaviour(DashboardUser):
    """Requests a report (202 + job id) and polls the job a bounded number of times."""

    abstract = True
    mix_key = "reporter"
    writes = True
    max_polls: ClassVar[int] = 10
    poll_interval: ClassVar[float] = 0.25

    @task
    def request_report(self) -> None:
        tenant = self.tenant()
        if tenant is None:
            return
        response = self.client.post(REPORTS.replace("{t}", tenant), json={}, name=REPORTS)
        self.relogin_if_expired(response)
        if response.status_code != 202:
            return
        job_id = response.json().get("job_id")
        for _ in range(self.max_polls):
            job = self.get_json(JOB.replace("{id}", str(job_id)), JOB)
            if not job or job.get("status") in TERMINAL_JOB_STATES:
                return
            gevent.sleep(self.poll_interval)


class LeaderboardBehaviour(DashboardUser):
    """Posts scores for a tenant's users and reads the top 10 with their own rank."""

    abstract = True
    mix_key = "leaderboard"
    writes = True

    def setup(self) -> None:
        self.members: dict[str, list[int]] = {}

    def _members(self, tenant: str) -> list[int]:
        if tenant not in self.members:
            users = self.get_json(USERS.replace("{t}", tenant), USERS) or []
            self.members[tenant] = [int(u["id"]) for u in users if "id" in u]
        return self.members[tenant]

    @task(2)
    def post_score(self) -> None:
        tenant = self.tenant()
        if tenant is None or not (members := self._members(tenant)):
            return
        body = {"user_id": self.zipf.choice(members), "score": round(self.rng.uniform(0, 1000), 2)}
        response = self.client.post(LEADERBOARD.replace("{t}", tenant), json=body, name=LEADERBOARD)
        self.relogin_if_expired(response)

    @task(3)
    def read_top(self) -> None:
        tenant = self.tenant()
        if tenant is None or not (members := self._members(tenant)):
            return
        me = self.zipf.choice(members)
        self.get(LEADERBOARD.replace("{t}", tenant) + f"?limit=10&user_id={me}", LEADERBOARD)


class PollerBehaviour(DashboardUser):
    """An open dashboard tab: re-reads the tenant's KPIs and areas every think time, sending back
    the ``ETag`` it holds in ``If-None-Match``, as a browser revalidating its copy does.

    An unchanged value comes back ``304 Not Modified`` with no body (still authenticated, rate
    limited and read from the cache first: it saves bandwidth and parsing, not the checks); a
    changed one ``200`` with its new tag. The 304s are successes, counted under ``statuses``.
    Not in the default mix: a load made of revalidations moves fewer bytes per request, so it
    is a scenario of its own (``--mix poller=1``, or beside the others).
    """

    abstract = True
    mix_key = "poller"

    def setup(self) -> None:
        self.etags: dict[str, str] = {}  # path -> the tag of the copy this tab holds

    def poll(self, template: str) -> None:
        tenant = self.tenant()
        if tenant is None:
            return
        path = template.replace("{t}", tenant)
        etag = self.etags.get(path)
        response = self.client.get(path, name=template, headers={"If-None-Match": etag} if etag else None)
        self.relogin_if_expired(response)
        if response.status_code == 200 and (fresh := response.headers.get("ETag")):
            self.etags[path] = fresh

    @task(2)
    def kpis(self) -> None:
        self.poll(KPIS)

    @task(1)
    def areas(self) -> None:
        self.poll(AREAS)


class AbuserBehaviour(DashboardUser):
    """A logged-in client that ignores Retry-After and hammers one endpoint: it *should* get 429s.

    Its 429s are marked successes (and counted as ``rate_limited_expected``);
    anything else that fails still fails. It never paces.
    """

    abstract = True
    mix_key = "abuser"
    paced = False

    def wait_time(self) -> float:
        return 0.0

    @task
    def hammer(self) -> None:
        tenant = self.tenant()
        if tenant is None:
            self.login()
            gevent.sleep(0.05)
            return
        with self.client.get(KPIS.replace("{t}", tenant), name=KPIS, catch_response=True) as response:
            if response.status_code == 429:
                response.success()
            elif response.status_code == 401:
                self.logged_in = False
