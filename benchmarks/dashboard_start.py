"""How long the dashboard takes to print its sign-in link (issue #13).

Wall time from launching the command to the `/login?code=` line on stdout, K runs each, interleaved:

* `codex-limits demo --dashboard` (spawns its own `serve --simulate`),
* `codex-limits dashboard` with no service running (it starts one),
* `codex-limits dashboard` with the service already running.

Each run is then stopped with SIGINT and must exit 0. Fresh temporary CODEX_HOME / CODEX_LIMITS_HOME per
round; nothing reaches the network.

Usage (from the repository root):

    .venv/bin/python benchmarks/dashboard_start.py [--runs K]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

CLI: Final = [sys.executable, "-m", "app_server.cli.main"]
ROOT: Final = Path(__file__).resolve().parent.parent


def seconds_to_link(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    process = subprocess.Popen(
        [*CLI, *args], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert process.stdout is not None
    for line in process.stdout:
        if "/login?code=" in line:
            break
    else:
        raise SystemExit(f"{args} printed no sign-in link (exit status {process.wait()})")
    took = time.perf_counter() - start
    process.send_signal(signal.SIGINT)
    if process.wait(timeout=30) != 0:
        raise SystemExit(f"{args} exited with status {process.returncode} after Ctrl-C")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    results: dict[str, list[float]] = {
        "demo --dashboard": [],
        "dashboard, starting the service": [],
        "dashboard, service running": [],
    }
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as root:
            (Path(root) / "codex").mkdir()
            env = {
                **os.environ,
                "CODEX_HOME": f"{root}/codex",
                "CODEX_LIMITS_HOME": f"{root}/data",
                "PYTHONUNBUFFERED": "1",
            }
            try:
                results["demo --dashboard"].append(seconds_to_link(["demo", "--dashboard"], env))
                results["dashboard, starting the service"].append(seconds_to_link(["dashboard"], env))
                results["dashboard, service running"].append(seconds_to_link(["dashboard"], env))
            finally:
                subprocess.run([*CLI, "service", "stop"], env=env, cwd=ROOT, capture_output=True, timeout=60)
    print(f"launch -> sign-in link on stdout, {runs} runs each")
    for name, values in results.items():
        print(f"  {name:32} median {statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f})")


if __name__ == "__main__":
    main()
