"""Run every ``benchmarks/bench_*.py`` and rewrite ``benchmarks/RESULTS.md`` (``make bench``).

Each benchmark runs in its own process (``python -m benchmarks.bench_<name>`` with its
defaults), so peak-RSS figures and thread settings of one never leak into the next.  Each
rewrites its own ``## `` section; a full run (no names given) then puts a header on top: the
machine, the versions, when it ran, how long each benchmark took, and every target the
sections report, met or missed, in one table.  Pass names to run a subset: ``python -m
benchmarks capture torch``; the header then marks those rows as re-run alone and rebuilds
its targets table from the sections.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._results import RESULTS

HERE = Path(__file__).resolve().parent
HEADER_END = "<!-- end of make bench header -->"
#: The packages whose versions decide the figures.
VERSIONS = (
    "tensorflow",
    "keras",
    "torch",
    "numpy",
    "zarr",
    "xarray",
    "holoviews",
    "bokeh",
    "panel",
)


def benchmark_names() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))


def run_one(name: str) -> tuple[float, int]:
    """Run one benchmark in a fresh interpreter; its wall time and exit status."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", f"benchmarks.bench_{name}"],
        cwd=HERE.parent,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    return time.perf_counter() - start, done.returncode


def machine() -> str:
    cpus = os.cpu_count()
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        model = found.group(1).strip() if found else ""
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        found = re.search(r"MemTotal:\s*(\d+) kB", meminfo.read_text())
        memory = f", {int(found.group(1)) / 2**20:.0f} GiB memory" if found else ""
    return (
        f"{platform.machine()}, {cpus} CPUs ({model}){memory}, Python {platform.python_version()}"
    )


def versions() -> str:
    found = []
    for package in VERSIONS:
        try:
            found.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return ", ".join(found)


def target_rows(text: str) -> list[tuple[str, str, str]]:
    """Every table row of the sections whose last cell says met or missed.

    Returns ``(section, measure, verdict)`` triples in the file's order, so the header can
    list each target once without the benchmarks knowing about each other.
    """
    rows, section = [], ""
    for line in text.splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
            continue
        cells = (
            [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        )
        if len(cells) < 3:
            continue
        if cells[-1].endswith(("✅", "❌")):  # | measure | value | target ✅ |
            met = cells[-1].endswith("✅")
            target = cells[-1].removesuffix("✅" if met else "❌").strip()
            rows.append(
                (section, f"{cells[0]} | {cells[-2]} | {target}", "met" if met else "**missed**")
            )
            continue
        verdict = cells[-1].strip("* ").lower()
        if verdict.startswith(("met", "missed")):
            # Rows are | measure | ... | value | target | verdict |.
            value, target = (cells[-3], cells[-2]) if len(cells) >= 4 else (cells[-2], "")
            rows.append((section, f"{cells[0]} | {value} | {target}", cells[-1]))
    return rows


def header(times: dict[str, tuple[float, int]], total: float, body: str) -> str:
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` (`python -m benchmarks`) in one run on {when}: {machine()}; "
        f"{versions()}. Every ratio below was measured within this run, each benchmark in its "
        "own process, one after the other on an otherwise idle machine; each section names the "
        "command that reproduces it alone.",
        "",
        f"Total: **{total / 60:.1f} min**.",
        "",
        "| benchmark | command | wall time | status |",
        "|---|---|---|---|",
    ]
    for name, (seconds, code) in times.items():
        status = "ok" if code == 0 else f"**failed** (exit {code})"
        lines.append(
            f"| {name} | `python -m benchmarks.bench_{name}` | {seconds:.0f} s | {status} |"
        )
    targets = target_rows(body)
    if targets:
        lines += [
            "",
            "### Targets at a glance",
            "",
            "| section | measure | value | target | |",
            "|---|---|---|---|---|",
        ]
        lines += [f"| {section} | {measure} | {verdict} |" for section, measure, verdict in targets]
    return "\n".join(lines) + "\n\n" + HEADER_END + "\n"


def refresh_header(times: dict[str, tuple[float, int]]) -> None:
    """After a subset run, keep the full run's header true: the re-run benchmarks' rows say
    when they ran alone, and the targets table is rebuilt from the sections as they are now.
    """
    text = RESULTS.read_text()
    if HEADER_END not in text:
        return
    top, body = text.split(HEADER_END, 1)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = []
    for line in top.splitlines():
        found = re.match(r"\| (\w+) \| `python -m benchmarks\.bench_\w+` \|", line)
        if found and found.group(1) in times:
            seconds, code = times[found.group(1)]
            status = "ok" if code == 0 else f"**failed** (exit {code})"
            line = f"{found.group(0)} {seconds:.0f} s | {status}, re-run alone {when} |"
        if line.startswith("### Targets at a glance"):
            break
        lines.append(line)
    targets = target_rows(body)
    lines += [
        "### Targets at a glance",
        "",
        "| section | measure | value | target | |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {section} | {measure} | {verdict} |" for section, measure, verdict in targets]
    RESULTS.write_text("\n".join(lines) + "\n\n" + HEADER_END + body)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"a subset of: {', '.join(benchmark_names())}")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(benchmark_names()))
    if unknown:
        parser.error(
            f"no benchmark named {', '.join(unknown)}; choose from {', '.join(benchmark_names())}"
        )
    names = args.names or benchmark_names()
    if not args.names:
        # A full run rewrites the whole file, so no figure from an earlier run survives.
        RESULTS.write_text("# Benchmark results\n")
    times: dict[str, tuple[float, int]] = {}
    start = time.perf_counter()
    for name in names:
        print(f"== bench_{name}", flush=True)
        times[name] = run_one(name)
        print(f"== bench_{name}: {times[name][0]:.0f} s, exit {times[name][1]}", flush=True)
    total = time.perf_counter() - start
    if not args.names:
        body = RESULTS.read_text().removeprefix("# Benchmark results\n").lstrip("\n")
        RESULTS.write_text(header(times, total, body) + "\n" + body)
    else:
        refresh_header(times)
    failed = [name for name, (_, code) in times.items() if code != 0]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    print(f"total {total / 60:.1f} min", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
