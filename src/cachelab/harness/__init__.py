"""Layer 4: what experiments need — the app as a process, logging in to it, cost capture, faults, payloads.

Built on the app (layer 3) and the launchers in :mod:`cachelab.servers`
(layer 2); whole experiments that use these pieces live above, in
:mod:`cachelab.experiments`. See ``cachelab._layers``.
"""

from cachelab.harness.cost import ClusterCostMeter, Cost, CostMeter

__all__ = ["ClusterCostMeter", "Cost", "CostMeter"]
