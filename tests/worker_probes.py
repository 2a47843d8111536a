"""Functions the tests run on Dask workers (``client.run``): importable there, and light (no
framework import, so a memory-limited worker stays as small as the analysis makes it)."""

from __future__ import annotations


def peak_rss() -> int:
    """This process's peak resident memory in bytes (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
