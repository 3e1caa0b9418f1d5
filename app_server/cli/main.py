"""The `codex-limits` command: routes the lean commands, sets the terminal's encoding, parses, runs, exits.

`parser` knows every command's arguments, `actions` what each one does; `launch` answers the cheapest
commands (statusline, proxy, --version) before even this module is imported.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence

from app_server import env as environment
from app_server.cli.exits import Exit


def _ascii_streams() -> None:
    """Under an ASCII locale (`env.ascii_locale`), say so on stdout and stderr: the operator commands then
    print ASCII (`terminal`)."""
    if environment.ascii_locale():
        for stream in (sys.stdout, sys.stderr):
            if isinstance(stream, io.TextIOWrapper):
                stream.reconfigure(encoding="ascii", errors="replace")


def main(argv: Sequence[str] | None = None) -> None:
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments[:1] == ["proxy"]:  # routed before the parser is built: the proxy must start fast
        from app_server.cli.proxy import main as proxy

        sys.exit(proxy(arguments[1:]))
    if arguments[:1] == ["statusline"]:  # likewise: a shell prompt runs it every time
        from app_server.cli.statusline import main as statusline

        sys.exit(statusline(arguments[1:]))
    if arguments[:1] != ["serve"]:  # serve's stdout is a JSON-RPC stream, UTF-8 whatever the locale
        _ascii_streams()
    from app_server.cli.parser import build_parser, parse

    try:
        parser = build_parser()
        if environment.completing():  # the shell asks for completions: answer and exit
            import argcomplete

            argcomplete.autocomplete(parser)
        args = parse(parser, arguments)
        if getattr(args, "run", None) is None:
            parser.print_help()
            sys.exit(int(Exit.OK))
        sys.exit(int(args.run(args)))
    except KeyboardInterrupt:
        sys.stderr.write("codex-limits: interrupted\n")
        sys.exit(int(Exit.INTERRUPTED))


if __name__ == "__main__":
    main()
