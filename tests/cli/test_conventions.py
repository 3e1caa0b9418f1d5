"""What people expect of a command-line tool: --version, help everywhere, log options, completion, Ctrl-C,
and every failure as a documented exit status with no traceback (also on terminals that are not UTF-8)."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
from pathlib import Path

import pytest

from app_server import __version__
from app_server.cli.exits import EXIT_MEANING, Exit
from app_server.cli.main import main
from app_server.cli.parser import MIN_WATCH, build_parser
from tests.support.cli import CLI, WAIT, cli, flat, one_error_line

DOCUMENTED = {int(code) for code in Exit}


@pytest.mark.subprocess
def test_version_and_bare_command(homes: dict[str, str]) -> None:
    version = cli(homes, "--version")
    assert (version.returncode, version.stdout.strip()) == (0, f"codex-limits {__version__}")
    bare = cli(homes)
    assert bare.returncode == 0, bare.stderr
    assert bare.stdout.startswith("usage: codex-limits") and "exit statuses:" in bare.stdout


def _subparsers(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser, str | None]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                found.append((name, sub, helps.get(name)))
                found += _subparsers(sub)
    return found


def test_every_command_and_argument_has_help() -> None:
    commands = _subparsers(build_parser())
    assert {name for name, _, _ in commands} >= {"status", "apply", "history", "accounts", "add", "completion"}
    for name, sub, summary in commands:
        assert summary, f"{name} has no one-line description"
        assert "\n" not in summary
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction) or action.dest == "help":
                continue
            assert action.help, f"{name}: {action.dest} has no help text"
        options = {o for a in sub._actions for o in a.option_strings}
        if name not in ("accounts",):
            assert {"--log-level", "-v", "-q"} <= options, f"{name} lacks the logging options"


def test_the_watch_minimum_is_the_parsers_one_number() -> None:
    parser = build_parser()
    assert parser.parse_args(["status", "--watch", f"{MIN_WATCH:g}"]).watch == MIN_WATCH
    with pytest.raises(SystemExit):
        parser.parse_args(["status", "--watch", f"{MIN_WATCH - 1:g}"])


@pytest.mark.subprocess
def test_help_lists_every_exit_status_including_the_checks(homes: dict[str, str]) -> None:
    out = cli(homes, "--help").stdout
    for code in Exit:
        assert f"\n  {int(code):<4} " in out, f"exit status {int(code)} is not in --help"
    assert "schema --check" in flat(out) and "--fail-above" in flat(out)
    assert set(EXIT_MEANING) == set(Exit)


@pytest.mark.subprocess
def test_schema_check_drift_exits_1(homes: dict[str, str], tmp_path: Path) -> None:
    result = cli(homes, "schema", "--check", "--out", str(tmp_path / "empty"))
    assert result.returncode == Exit.CHECK_FAILED


@pytest.mark.subprocess
@pytest.mark.parametrize("flags", [["-q"], ["-v"], ["--log-level", "error"]])
def test_log_options_work_after_any_command(homes: dict[str, str], flags: list[str]) -> None:
    for args in (["history", "--simulate"], ["accounts", "list"]):
        result = cli(homes, *args, *flags)
        assert result.returncode == 0, result.stderr


@pytest.mark.subprocess
def test_verbose_shows_the_servers_log(homes: dict[str, str]) -> None:
    quiet = cli(homes, "status", "--simulate")
    loud = cli(homes, "status", "--simulate", "-v")
    assert quiet.stderr == ""
    assert loud.returncode == 0 and "INFO" in loud.stderr


@pytest.mark.subprocess
@pytest.mark.parametrize(("shell", "marker"), [("bash", "complete "), ("zsh", "compdef"), ("fish", "complete ")])
def test_completion_scripts(homes: dict[str, str], shell: str, marker: str) -> None:
    result = cli(homes, "completion", shell)
    assert result.returncode == 0, result.stderr
    assert marker in result.stdout and "codex-limits" in result.stdout


@pytest.mark.subprocess
def test_completion_answers_the_shell(homes: dict[str, str], tmp_path: Path) -> None:
    answer = tmp_path / "answer"
    env = {
        **homes,
        "_ARGCOMPLETE": "1",
        "COMP_LINE": "codex-limits status --fa",
        "COMP_POINT": str(len("codex-limits status --fa")),
        "_ARGCOMPLETE_STDOUT_FILENAME": str(answer),
    }
    result = subprocess.run([*CLI], env=env, capture_output=True, text=True, timeout=WAIT, check=False)
    assert result.returncode == 0, result.stderr
    assert "--fail-above" in answer.read_text()


@pytest.mark.subprocess
def test_ctrl_c_during_a_read_exits_130_without_a_traceback(homes: dict[str, str]) -> None:
    # `history --simulate -v`: the server logs on stderr as it starts, so we know the command is under way.
    process = subprocess.Popen(
        [*CLI, "status", "--simulate", "--watch", "5", "-v"],
        env={**homes, "COLUMNS": "80"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        process.stderr.readline()
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=WAIT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=WAIT)
    assert process.returncode == 0  # --watch: Ctrl-C is the way out
    assert b"Traceback" not in err


@pytest.mark.subprocess
def test_ctrl_c_while_reading_exits_130(fast_and_stalled: dict[str, str]) -> None:
    process = subprocess.Popen(
        [*CLI, "status", "-v"],
        env=fast_and_stalled,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        process.stderr.readline()  # the server is up and logging: the read of `stalled` hangs from here on
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=WAIT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=WAIT)
    assert process.returncode == Exit.INTERRUPTED
    assert b"Traceback" not in err and b"codex-limits: interrupted" in err


@pytest.mark.subprocess
def test_ctrl_c_at_the_prompt_exits_3_and_elsewhere_130(homes: dict[str, str]) -> None:
    from tests.support.cli import run_on_terminal

    at_prompt = run_on_terminal(homes, ["apply", "alice", "--simulate"], None)
    assert at_prompt.returncode == Exit.REFUSED and "nothing was spent" in at_prompt.stderr
    with_help = cli(homes, "--help").stdout
    assert "\n  130  Ctrl-C" in with_help


# -- terminals that cannot show UTF-8 -----------------------------------------------------------

NOT_UTF8 = [
    # Python turns on its UTF-8 mode under this locale (PEP 540): the terminal still shows ASCII only.
    {"LC_ALL": "POSIX", "PYTHONUTF8": "", "PYTHONIOENCODING": ""},
    {"LC_ALL": "POSIX", "PYTHONUTF8": "0", "PYTHONIOENCODING": ""},
    {"PYTHONIOENCODING": "ascii", "PYTHONUTF8": "0"},
]


@pytest.mark.subprocess
@pytest.mark.parametrize("locale_env", NOT_UTF8, ids=["posix", "posix-no-utf8-mode", "ascii"])
@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["status", "--simulate"], Exit.OK),
        (["apply", "alice", "--simulate", "--yes"], Exit.OK),
        (["apply", "bob", "--simulate", "--yes"], Exit.REFUSED),
        (["history", "--simulate"], Exit.OK),
        (["refresh", "carol", "--simulate"], Exit.REFUSED),
        (["apply", "alice", "--simulate", "--yes", "--json"], Exit.OK),
    ],
)
def test_no_traceback_on_an_ascii_terminal(
    homes: dict[str, str], locale_env: dict[str, str], args: list[str], code: int
) -> None:
    env = {k: v for k, v in {**homes, **locale_env}.items() if v != ""}
    env.pop("LANG", None)
    if args[0] == "status":
        env["TTY_COMPATIBLE"] = "1"  # the table, with its bars: a terminal's view
    if "LC_ALL" not in locale_env:
        env.pop("LC_ALL", None)
    result = subprocess.run([*CLI, *args], env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=WAIT)
    assert result.returncode == code, result.stderr
    assert b"Traceback" not in result.stderr
    assert int(result.returncode) in DOCUMENTED
    result.stdout.decode("ascii")  # every byte is ASCII: nothing a non-UTF-8 terminal shows as garbage
    result.stderr.decode("ascii")
    if "--json" in args:
        assert json.loads(result.stdout)["outcome"] == "reset"
    elif args[0] == "status":
        assert b"100% ######" in result.stdout


@pytest.mark.subprocess
def test_a_refusal_is_still_one_line(homes: dict[str, str]) -> None:
    result = cli(homes, "apply", "bob", "--simulate", "--yes")
    assert "nothing was spent" in one_error_line(result)


@pytest.mark.parametrize(
    ("args", "usage"),
    [
        (["status", "--bogus"], "usage: codex-limits status "),
        (["accounts", "list", "--bogus"], "usage: codex-limits accounts list "),
        (["service", "status", "--bogus"], "usage: codex-limits service status "),
    ],
)
def test_a_bad_flag_shows_the_commands_own_usage(
    args: list[str], usage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == Exit.USAGE
    err = capsys.readouterr().err
    assert err.startswith(usage), err
    assert err.rstrip().endswith("error: unrecognized arguments: --bogus")


@pytest.mark.parametrize(("typed", "meant"), [("stauts", "status"), ("acounts", "accounts"), ("dashbord", "dashboard")])
def test_a_mistyped_command_gets_a_suggestion(typed: str, meant: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([typed])
    assert exited.value.code == Exit.USAGE
    assert f"did you mean '{meant}'?" in capsys.readouterr().err
