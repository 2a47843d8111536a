"""Functions the tests run on Dask workers (``client.run``): importable there, and light (no
framework import, so a memory-limited worker stays as small as the analysis makes it)."""

from __future__ import annotations


def current_rss() -> int:
    """This process's resident memory now, bytes.  (Not ``ru_maxrss``: Linux keeps the
    parent's high-water mark across the fork and exec that start a spawned worker.)"""
    import psutil

    return int(psutil.Process().memory_info().rss)
