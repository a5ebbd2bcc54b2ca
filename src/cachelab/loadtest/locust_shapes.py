"""The Locust side of :mod:`cachelab.loadtest.shapes`: one shape class that dispatches on ``--shape``.

Kept apart from the schedules because importing Locust monkey-patches the
standard library (gevent); only locustfiles import this module.
"""

from __future__ import annotations

from typing import Any

from locust import LoadTestShape

from cachelab.loadtest.shapes import ShapeParams, normalize_shape, shape_target


class SelectableShape(LoadTestShape):
    """The one shape class a locustfile declares; ``--shape`` picks the schedule.

    Subclass it (empty body) in the locustfile so Locust finds it. It reads
    ``-u``/``-r``/``-t`` (``use_common_options``), and for ``constant`` tells
    the users (through the options Locust forwards to workers) how many of
    them share the arrival rate.
    """

    abstract = True
    use_common_options = True

    def _params(self, opts: Any) -> ShapeParams:
        return ShapeParams(
            users=int(getattr(opts, "num_users", None) or 1),
            spawn_rate=float(getattr(opts, "spawn_rate", None) or 1.0),
            duration=float(opts.run_time) if getattr(opts, "run_time", None) else None,
            steps=int(getattr(opts, "cachelab_shape_steps", 4) or 4),
        )

    def tick(self) -> tuple[int, float] | None:
        assert self.runner is not None
        opts = self.runner.environment.parsed_options
        shape = normalize_shape(getattr(opts, "cachelab_shape", "none"))
        params = self._params(opts)
        if shape == "constant":
            opts.cachelab_pace_users = params.users  # forwarded to workers with the spawn message
        return shape_target(shape, self.get_run_time(), params)
