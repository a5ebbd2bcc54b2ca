"""Locust scenarios for the sample Initiative Dashboard API (``cachelab serve``).

    locust -f locustfiles/dashboard.py                      # web UI, http://127.0.0.1:8000
    locust -f locustfiles/dashboard.py --headless -u 20 -r 5 -t 30s \\
        --mix viewer=5,browser=10,editor=1 --results-dir results/manual --csv results/manual/locust
    locust -f locustfiles/dashboard.py --headless -u 20 -t 30s --shape constant --arrival-rate 200

Standard Locust flags work unchanged (--processes, --master/--worker, --csv,
--html). cachelab's own options (--mix, --shape, --arrival-rate, --think-time,
--seed, --tenants, --results-dir, --redis-url, --threshold, --thresholds-file) are
listed by ``cachelab locust-options``, described in locustfiles/README.md and
shown in the web UI's custom parameters (Locust prints --help before it
imports a locustfile, so ``locust --help`` cannot list them). Everything this
file declares is implemented, and tested, in :mod:`cachelab.loadtest`. The users log in as the
app's seeded users with CACHELAB_SEED_PASSWORD, or the password `cachelab serve` generated on this
machine.

The file imports only ``locust`` and the installed ``cachelab``, nothing
beside it, so it runs from any working directory: from the repository root
as above, or as ``locust -f /path/to/locustfiles/dashboard.py`` from anywhere
(relative paths such as ``--results-dir`` and ``--csv`` are then relative to
where you are).
"""

from locust import events

from cachelab.loadtest import plugin
from cachelab.loadtest.locust_shapes import SelectableShape
from cachelab.loadtest.users import (
    AbuserBehaviour,
    BrowserBehaviour,
    EditorBehaviour,
    LeaderboardBehaviour,
    PollerBehaviour,
    ReporterBehaviour,
    ViewerBehaviour,
)

plugin.install(events)


class DashboardShape(SelectableShape):
    """``--shape ramp|step|spike|soak|constant`` over ``-u`` users for ``-t``.

    Locust uses any shape class in a locustfile, so there is exactly one; ``--shape none``
    (the default, or ``$CACHELAB_SHAPE``) removes it at start-up and plain ``-u/-r/-t`` apply.
    The schedules live in :mod:`cachelab.loadtest.shapes`.
    """


class DashboardViewer(ViewerBehaviour):
    """Logs in as a real user, reads the dashboard and KPIs (--mix viewer=N)."""


class InitiativeBrowser(BrowserBehaviour):
    """Zipf-skewed list pages, rows, areas, stats (--mix browser=N)."""


class InitiativeEditor(EditorBehaviour):
    """PATCHes progress/status, which invalidates cached reads (--mix editor=N)."""


class ReportRequester(ReporterBehaviour):
    """POSTs a report job and polls it (--mix reporter=N)."""


class LeaderboardUpdater(LeaderboardBehaviour):
    """Posts scores and reads the top 10 with a rank (--mix leaderboard=N)."""


class DashboardPoller(PollerBehaviour):
    """An open dashboard tab revalidating KPIs and areas with If-None-Match: 304s (--mix poller=N)."""


class AbusiveClient(AbuserBehaviour):
    """Hammers one endpoint; its 429s are expected, not failures (--mix abuser=N)."""
