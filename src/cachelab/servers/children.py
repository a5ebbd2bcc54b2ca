"""Child processes that do not outlive the process that started them.

Every server the suite launches is stopped by its owner (context managers,
``atexit``). That does not run when the owner is killed outright: a notebook
kernel that dies with an interrupted ``cachelab report``, a test runner that
gets SIGKILL. On Linux the child is therefore started through util-linux's
``setpriv --pdeathsig TERM``, which asks the kernel to send it SIGTERM when
its parent dies and then execs the real command (no ``preexec_fn``, which is
unsafe in a process with threads). Elsewhere, or without ``setpriv``, this is
a plain :class:`subprocess.Popen`.

The signal fires when the *thread* that forked the child exits, not the
process, so it is only armed for children started from the main thread;
children started from another thread rely on their owner's cleanup alone.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any


@functools.cache
def _setpriv() -> str | None:
    return shutil.which("setpriv") if sys.platform.startswith("linux") else None


def spawn(args: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen(args, **kwargs)`` for a child that dies with this process."""
    setpriv = _setpriv()
    if setpriv is not None and threading.current_thread() is threading.main_thread():
        args = [setpriv, "--pdeathsig", "TERM", "--", *args]
    return subprocess.Popen(args, **kwargs)
