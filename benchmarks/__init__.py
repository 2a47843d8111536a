"""tensortap's benchmarks (``make bench``; ``python -m benchmarks.bench_<name>`` for one).

Their scratch runs go under ``benchmarks/out/scratch`` (the checkout's disk, where users
keep their runs), not the system's temporary folder, unless ``TMPDIR`` says otherwise: on
the benchmark VM a small file written under ``/tmp`` (open, write, rename) costs 0.35-0.7 ms
against 0.04 ms elsewhere on the same ext4 disk (cause unknown, the VM's own), and
small-file-heavy runs measured that instead of tensortap.  Set here, in the package, so
every benchmark run alone, and the processes it starts, follow it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

if "TMPDIR" not in os.environ:
    _SCRATCH = Path(__file__).resolve().parent / "out" / "scratch"
    _SCRATCH.mkdir(parents=True, exist_ok=True)
    os.environ["TMPDIR"] = str(_SCRATCH)
    tempfile.tempdir = None  # re-read TMPDIR on next use
