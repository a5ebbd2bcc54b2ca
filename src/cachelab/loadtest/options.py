"""The command-line options cachelab adds to Locust (each also read from an environment variable).

Registered on ``events.init_command_line_parser``, so Locust accepts them,
shows them in the web UI's custom-parameters panel, and forwards them from
the master to its workers. Flags beat environment variables, which beat the
defaults. They are *not* in ``locust --help``: Locust prints its help before
it imports the locustfile that registers them. ``cachelab locust-options``
(:func:`options_help`) prints them instead, from the same definitions.
"""

from __future__ import annotations

import argparse
from typing import Any

MIX_KEYS = ("viewer", "browser", "editor", "reporter", "leaderboard", "abuser", "poller")
DEFAULT_MIX = "viewer=5,browser=10,editor=1,reporter=1,leaderboard=1,abuser=0,poller=0"
DEFAULT_THINK_TIME = "0.5,1.5"


def parse_mix(text: str | None) -> dict[str, int]:
    """``"viewer=5,browser=10"`` → ``{"viewer": 5, "browser": 10, <others>: 0}``.

    Keys not named get weight 0, so ``--mix browser=1`` runs browsers only.
    """
    if not text or not text.strip():
        text = DEFAULT_MIX
    weights = dict.fromkeys(MIX_KEYS, 0)
    for part in text.replace(";", ",").split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in weights:
            keys = ", ".join(MIX_KEYS)
            raise ValueError(f"bad --mix entry {part.strip()!r}; use key=weight with keys {keys}")
        weight = int(value)
        if weight < 0:
            raise ValueError(f"--mix weight for {key} must be >= 0")
        weights[key] = weight
    if not any(weights.values()):
        raise ValueError("--mix gives every user type weight 0")
    return weights


def parse_think_time(text: str | None) -> tuple[float, float]:
    """``"0.5,1.5"`` → (0.5, 1.5) seconds between a user's tasks; ``"0"`` → no think time."""
    parts = [float(p) for p in (text or DEFAULT_THINK_TIME).split(",") if p.strip()]
    if not parts or len(parts) > 2 or min(parts) < 0:
        raise ValueError(f"bad --think-time {text!r}; use MIN,MAX seconds, e.g. 0.5,1.5")
    low, high = parts[0], parts[-1]
    return (min(low, high), max(low, high))


def add_arguments(parser: Any) -> None:
    """Add cachelab's options to Locust's (configargparse) parser."""
    # On the parser itself, not a group: only Locust's parser knows ``include_in_web_ui``.
    group = parser
    group.add_argument("--mix", dest="cachelab_mix", env_var="CACHELAB_MIX", default=DEFAULT_MIX,
                       help=f"user-type weights KEY=N,... with keys {', '.join(MIX_KEYS)} (unnamed: 0)")
    group.add_argument("--think-time", dest="cachelab_think_time", env_var="CACHELAB_THINK_TIME",
                       default=DEFAULT_THINK_TIME, help="seconds between a user's tasks, MIN,MAX (0 = none)")
    group.add_argument("--shape", dest="cachelab_shape", env_var="CACHELAB_SHAPE", default="none",
                       help="load shape: none (plain -u/-r/-t), ramp, step, spike, soak, constant")
    group.add_argument("--arrival-rate", dest="cachelab_arrival_rate", env_var="CACHELAB_ARRIVAL_RATE",
                       type=float, default=50.0,
                       help="--shape constant: tasks per second for the whole test, shared by the -u users")
    group.add_argument("--shape-steps", dest="cachelab_shape_steps", env_var="CACHELAB_SHAPE_STEPS",
                       type=int, default=4, help="--shape step: number of steps")
    group.add_argument("--seed", dest="cachelab_seed", env_var="CACHELAB_SEED", type=int, default=1,
                       help="seed for the Zipf tenant/page choices (same seed, same requests)")
    group.add_argument("--tenants", dest="cachelab_tenants", env_var="CACHELAB_TENANTS", type=int, default=5,
                       help="tenants the app was seeded with (cachelab serve --tenants; default 5): "
                       "users log in as the seeded users of these tenants")
    group.add_argument("--zipf-s", dest="cachelab_zipf_s", env_var="CACHELAB_ZIPF_S", type=float, default=1.1,
                       help="Zipf exponent of tenant and page popularity (0 = uniform)")
    group.add_argument("--warmup", dest="cachelab_warmup", env_var="CACHELAB_WARMUP", type=float, default=0,
                       help="seconds to run before measuring: log-ins, cold connections and the ramp are "
                       "left out of every result (-t includes them)")
    group.add_argument("--results-dir", dest="cachelab_results_dir", env_var="CACHELAB_RESULTS_DIR",
                       default="",
                       help="write cachelab's JSON/CSV results here (beside Locust's --csv/--html)")
    group.add_argument("--redis-url", dest="cachelab_redis_url", env_var="REDIS_URL", default="",
                       include_in_web_ui=False,
                       help="the app's Redis, for server-side deltas (INFO only, never written)")
    group.add_argument("--threshold", dest="cachelab_threshold", action="append", default=[],
                       include_in_web_ui=False,
                       help="pass/fail criterion, repeatable: p99<50ms, error_rate<0.1%%, kpis:hit_ratio>0.9")
    group.add_argument("--fault", dest="cachelab_fault", action="append", default=[], include_in_web_ui=False,
                       help="a Redis fault during the run, KIND@START+DURATION[:rtt=S] with KIND slow, hang "
                       "or reset (repeatable; needs --fault-proxy)")
    group.add_argument("--fault-proxy", dest="cachelab_fault_proxy", env_var="CACHELAB_FAULT_PROXY",
                       default="", include_in_web_ui=False,
                       help="the Redis URL the fault proxy forwards to; run the app with REDIS_URL at the "
                       "proxy")
    group.add_argument("--fault-proxy-port", dest="cachelab_fault_proxy_port", type=int, default=0,
                       include_in_web_ui=False, help="port for the fault proxy on 127.0.0.1 (default: free)")
    group.add_argument("--thresholds-file", dest="cachelab_thresholds_file",
                       env_var="CACHELAB_THRESHOLDS_FILE", default="", include_in_web_ui=False,
                       help="thresholds, one per line, or a YAML/JSON list / endpoint mapping")


class _HelpOnlyParser(argparse.ArgumentParser):
    """Accepts the configargparse/Locust keywords ``add_arguments`` uses, for printing help."""

    def add_argument(self, *args: Any, **kwargs: Any) -> Any:
        env_var = kwargs.pop("env_var", None)
        kwargs.pop("include_in_web_ui", None)
        text = kwargs.get("help", "")
        if kwargs.get("default") not in (None, "", []) and "default" not in text:
            text += " (default: %(default)s)"
        if env_var:
            text += f" [env {env_var}]"
        kwargs["help"] = text
        kwargs.setdefault("metavar", args[0].lstrip("-").replace("-", "_").upper())
        return super().add_argument(*args, **kwargs)


def options_help() -> str:
    """The help text of every option :func:`add_arguments` registers (``cachelab locust-options``)."""
    parser = _HelpOnlyParser(
        prog="locust -f locustfiles/dashboard.py",
        usage="%(prog)s [locust options] [cachelab options]",
        description="The options cachelab adds to Locust. `locust --help` cannot show them: Locust "
        "prints its help before it loads the locustfile that adds them. Each can also be set "
        "through the environment variable shown.",
        add_help=False,
    )
    add_arguments(parser)
    text = parser.format_help().replace("\noptions:\n", "\ncachelab options:\n", 1)
    # Read by the plugin itself (configargparse has no list-valued variables).
    return text + "\n  CACHELAB_THRESHOLDS   more --threshold values, ';'-separated\n"
