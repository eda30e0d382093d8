"""The process the local sweep backend starts for each run: ``python -m irnn.sweep.worker JOB_JSON``.

``JOB_JSON`` holds the run's config, its directory, the sweep's process id and the CPUs to run
on. The worker arranges to die with the sweep (so a killed sweep leaves no run training behind
that a restarted sweep would race), pins itself to its CPUs, and trains through
:func:`irnn.sweep.runner.run_one`. Its output goes to the run's ``train.log``; the exit status is
0 when the run is finished, 2 for a problem the user can fix (the message is the last log line).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import List, Optional


def _die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when the sweep dies (Linux; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the sweep died before the request above took effect
        os._exit(1)


def main(argv: Optional[List[str]] = None) -> int:
    job = json.loads((argv if argv is not None else sys.argv[1:])[0])
    _die_with_parent(job["parent"])
    if job.get("cpus") and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, job["cpus"])

    from ..errors import IrnnError
    from .runner import run_one

    try:
        run_one(job["config"], job["run_dir"])
    except IrnnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
