"""The load shape for the dashboard scenarios: one class, schedule chosen by ``--shape``.

Locust auto-uses any shape class in a locustfile, so there is exactly one;
``--shape none`` (the default, or ``$CACHELAB_SHAPE``) removes it at start-up
and plain ``-u/-r/-t`` apply. The schedules (ramp, step, spike, soak,
constant arrival rate) live in :mod:`cachelab.loadtest.shapes`.
"""

from cachelab.loadtest.locust_shapes import SelectableShape


class DashboardShape(SelectableShape):
    """``--shape ramp|step|spike|soak|constant`` over ``-u`` users for ``-t``."""
