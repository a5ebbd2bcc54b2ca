"""How ``cachelab report`` starts Jupyter kernels: with CurveZMQ transport encryption when possible.

A kernel started over TCP without keys logs "Kernel is running over TCP without
encryption" to the parent's stderr, once per notebook. The message is true
(code and outputs cross loopback in plain text), so the fix is to remove its
cause, not to hide it: jupyter_client (>= 8.10) can provision Curve keys for
kernels whose kernelspec declares ``supported_encryption: curve`` (ipykernel
does). Older stacks get no options and behave as before (their ipykernel does
not print the warning either).
"""

from __future__ import annotations

from typing import Any


def kernel_options() -> dict[str, Any]:
    """Extra keyword arguments for ``papermill.execute_notebook`` / ``nbclient.NotebookClient``."""
    try:
        import zmq
        from jupyter_client.manager import KernelManager
        from traitlets.config import Config
    except ImportError:
        return {}
    if not hasattr(KernelManager, "transport_encryption") or not zmq.has("curve"):
        return {}
    # "auto": encrypt when the kernelspec supports it, else start the kernel as before.
    return {"config": Config({"KernelManager": {"transport_encryption": "auto"}})}
