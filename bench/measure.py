"""Measuring helpers shared by the benchmarks: best-of timing and peak RSS of a call run
in a fresh process.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def best_of(repeats: int, run):
    """(fastest wall time in s, result) of ``repeats`` runs: the least noisy estimate."""
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - t0)
    return min(times), result


# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork + exec,
# so a child started by a large benchmark process would report the parent's peak.
_PEAK = """
import sys
sys.path.insert(0, {bench!r})
try:
    {call}
finally:
    status = open("/proc/self/status").read()
    kib = int(status.split("VmHWM:")[1].split()[0])
    sys.stderr.write(f"PEAK_RSS_KIB={{kib}}\\n")
"""


def peak_rss_mib(call: str, *args: str) -> tuple[float, str]:
    """Run ``call`` (Python, sys.argv = args) in a fresh process: its peak RSS (MiB), stdout."""
    code = _PEAK.format(bench=str(BENCH), call=call)
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
    )
    kib = int(proc.stderr.rsplit("PEAK_RSS_KIB=", 1)[1].split()[0])
    return kib / 1024, proc.stdout
