"""Every touchpoint against its goal (issue 20): start-up against the reference, the CLI against the interpreter.

Measured interleaved (one run of each per round, the order rotating), from a NON-editable install, in fresh
temporary CODEX_HOME / CODEX_LIMITS_HOME directories, nothing reaching the network:

    touchpoint                                         compared with                        goal
    python -m app_server: spawn -> initialize answer   `codex app-server` (--reference)     <= 1.5x
    codex-limits proxy (service running): the same    `codex app-server`, cold             <= 0.4x
    codex-limits status (service running)              the floor: python -c "import json"   <= 4x
    codex-limits statusline (service running)          the floor                            <= 1.5x
    codex-limits statusline (no service)               the floor                            <= 1.5x
    codex-limits --version                             the floor                            <= 1.5x

The floor is the same install's interpreter doing nothing but `import json`, in the same run, so the ratios
hold on a loaded machine where the milliseconds do not. Usage:

    python benchmarks/touchpoints.py [--python VENV/bin/python] [--reference PATH ...] [--runs 15]

--python: the interpreter of a non-editable install (`python -m venv /tmp/v && /tmp/v/bin/pip install .`);
without it the script makes one in a temporary directory (pip needs the package index). --reference: a
`codex` executable (`npm install @openai/codex@0.169.0` in a directory outside the repository gives
node_modules/.bin/codex); repeatable, the first one is the reference the goals use, the others are shown next
to it; without it the reference goals are left out. Exit status 0 when
every goal that could be measured holds.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.machine import describe as machine  # noqa: E402
from benchmarks.machine import loadavg as load  # noqa: E402

INIT_LINE: Final = (
    b'{"id":0,"method":"initialize","params":{"clientInfo":{"name":"bench","title":null,"version":"1.0"}}}\n'
)


@dataclass
class Touchpoint:
    name: str
    run: Callable[[], tuple[float, float]]
    against: str | None = None  # the name of the touchpoint it is compared with
    goal: float | None = None
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)


def _reap(child: subprocess.Popen[bytes]) -> tuple[int, float]:
    """Wait for `child`: its exit status and the CPU milliseconds it (and the children it reaped) used."""
    try:
        _, status, usage = os.wait4(child.pid, 0)
    except ChildProcessError:
        return child.wait(), float("nan")
    child.returncode = os.waitstatus_to_exitcode(status)
    return child.returncode, (usage.ru_utime + usage.ru_stime) * 1000


def first_answer(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Spawn `command`, write `initialize`, read the answer line: milliseconds; then end of input, and the
    CPU milliseconds of the whole life of the process (its shutdown included)."""
    started = time.perf_counter()
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(INIT_LINE)
    child.stdin.flush()
    line = child.stdout.readline()
    elapsed = (time.perf_counter() - started) * 1000
    child.stdin.close()
    child.stdout.read()
    _, cpu = _reap(child)
    if b'"result"' not in line:
        raise SystemExit(f"{' '.join(command)} did not answer initialize: {line[:200]!r}")
    return elapsed, cpu


def to_exit(command: list[str], env: dict[str, str], expect: bytes | None = None) -> tuple[float, float]:
    """Run `command` to its end, output read through a pipe (not a terminal): milliseconds, CPU milliseconds."""
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors, env=env)
        assert child.stdout is not None
        out = child.stdout.read()  # until the child closes it; stderr goes to a file, so neither pipe can stall
        code, cpu = _reap(child)
        elapsed = (time.perf_counter() - started) * 1000
        errors.seek(0)
        err = errors.read()
    if code != 0 or (expect is not None and expect not in out):
        raise SystemExit(f"{' '.join(command)} failed ({code}): {out[:200]!r} {err[-500:]!r}")
    return elapsed, cpu


def make_install(where: Path) -> Path:
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    print(f"installing {ROOT} (non-editable) into {venv} ...", file=sys.stderr)
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(ROOT)], check=True)
    return python


def check_install(python: Path) -> str:
    """The installed package's directory; refuses an editable install (it would measure the checkout)."""
    where = subprocess.run(
        [str(python), "-c", "import app_server, pydantic; print(app_server.__file__); print(pydantic.VERSION)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tempfile.gettempdir(),
    ).stdout.split()
    if "site-packages" not in where[0]:
        raise SystemExit(f"{python}: app_server comes from {where[0]}, not an installed package (use pip install .)")
    return where[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--python", type=Path, help="interpreter of a non-editable install (default: make one)")
    parser.add_argument("--reference", action="append", default=[], help="a `codex` executable (repeatable)")
    parser.add_argument("--runs", type=int, default=15, help="runs of each touchpoint (default 15)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="codex-limits-touchpoints-") as tmp:
        root = Path(tmp)
        python = args.python or make_install(root)
        pydantic_version = check_install(python)
        bin_dir = python.parent
        cli = [str(bin_dir / "codex-limits")]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX_", "OPENAI_", "PYDANTIC_"))}
        (root / "codex").mkdir()
        env.update(CODEX_HOME=str(root / "codex"), CODEX_LIMITS_HOME=str(root / "data"), NO_COLOR="1")
        env["CODEX_REFRESH_TOKEN_URL_OVERRIDE"] = "http://127.0.0.1:9/oauth/token"
        no_service = {**env, "CODEX_LIMITS_HOME": str(root / "no-service")}
        os.chdir(root)  # a neutral working directory, as a client spawns the server

        points = [
            Touchpoint("floor: python -c 'import json'", lambda: to_exit([str(python), "-c", "import json"], env)),
            Touchpoint(
                "python -m app_server -> initialize answer",
                lambda: first_answer([str(python), "-m", "app_server"], env),
                against="reference",
                goal=1.5,
            ),
            Touchpoint(
                "codex-limits proxy -> initialize answer (service running)",
                lambda: first_answer([*cli, "proxy"], env),
                against="reference",
                goal=0.4,
            ),
            Touchpoint(
                "codex-limits status (service running)",
                lambda: to_exit([*cli, "status"], env),
                against="floor",
                goal=4.0,
            ),
            Touchpoint(
                "codex-limits statusline (service running)",
                lambda: to_exit([*cli, "statusline"], env, expect=b"default"),
                against="floor",
                goal=1.5,
            ),
            Touchpoint(
                "codex-limits statusline (no service)",
                lambda: to_exit([*cli, "statusline"], no_service, expect=b"no service"),
                against="floor",
                goal=1.5,
            ),
            Touchpoint("codex-limits --version", lambda: to_exit([*cli, "--version"], env), against="floor", goal=1.5),
        ]
        references = [
            Touchpoint(
                f"reference: codex {reference_version(ref)} app-server -> initialize answer",
                functools.partial(first_answer, [ref, "app-server"], env),
            )
            for ref in args.reference
        ]

        started = subprocess.run([*cli, "service", "start"], env=env, capture_output=True, text=True, check=False)
        if started.returncode != 0:
            raise SystemExit(f"codex-limits service start failed: {started.stderr}")
        before = load()
        try:
            to_exit([*cli, "status"], env)  # one read, so the status line has a snapshot to show
            everything = points + references
            for point in everything:  # warm-up: bytecode, page cache
                point.run()
            for round_ in range(args.runs):
                shift = round_ % len(everything)
                for point in everything[shift:] + everything[:shift]:
                    elapsed, cpu = point.run()
                    point.times.append(elapsed)
                    point.cpu.append(cpu)
        finally:
            subprocess.run([*cli, "service", "stop"], env=env, capture_output=True, check=False)
        after = load()

    print(f"machine: {machine()}, pydantic {pydantic_version}")
    print(f"load average (1/5/15 min): {before} before, {after} after; {args.runs} runs each, interleaved")
    print(f"install: {python} (non-editable)")
    print()
    floor = points[0]
    reference = references[0] if references else None
    width = max(len(p.name) for p in points + references)
    print(
        f"{'touchpoint':<{width}}  {'median':>7}  {'best':>7}  {'ratio':>6}  {'best':>6}  {'cpu':>6}  {'ratio':>6}"
        "  goal (ratio of the medians)"
    )
    ok = True
    for point in points + references:
        ratio_text, best_text, cpu_text, goal_text = "", "", "", ""
        base = floor if point.against == "floor" else reference if point.against == "reference" else None
        if point.goal is not None:
            goal_text = f"<= {point.goal:g}x {point.against}"
            if base is None:
                goal_text += " (no --reference given)"
            else:
                ratio = point.median / base.median
                met = ratio <= point.goal
                ok &= met
                ratio_text, best_text = f"{ratio:.2f}x", f"{min(point.times) / min(base.times):.2f}x"
                cpu_text = f"{point.cpu_median / base.cpu_median:.2f}x"
                goal_text += ": met" if met else ": NOT met"
        print(
            f"{point.name:<{width}}  {point.median:7.1f}  {min(point.times):7.1f}  {ratio_text:>6}  {best_text:>6}"
            f"  {point.cpu_median:6.1f}  {cpu_text:>6}  {goal_text}"
        )
    if len(references) > 1:
        ours = points[1]
        for other in references[1:]:
            print(f"start-up against {other.name.split(' app-server')[0]}: {ours.median / other.median:.2f}x")
    print(
        "times in ms; `best`: the fastest run of each (its ratio approximates a quiet machine); `cpu`: CPU ms of"
        " the whole process (spawned ones: to their exit, after end of input), less sensitive to the load"
    )
    return 0 if ok else 1


def reference_version(executable: str) -> str:
    done = subprocess.run([executable, "--version"], capture_output=True, text=True, timeout=60, check=False)
    return done.stdout.strip().rsplit(" ", 1)[-1] if done.returncode == 0 else "?"


if __name__ == "__main__":
    sys.exit(main())
