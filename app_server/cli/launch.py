"""The `codex-limits` console script: answers what must be instant before the full CLI is imported.

`statusline` (every shell prompt runs it), `proxy` (every client spawn) and `--version` cost about the
interpreter; everything else goes to `app_server.cli.main`, whose argparse parser and helpers cost more.
"""

import sys


def main(argv: "list[str] | None" = None) -> None:
    arguments = sys.argv[1:] if argv is None else list(argv)
    first = arguments[:1]
    if first == ["statusline"]:
        from app_server.cli.statusline import main as statusline

        sys.exit(statusline(arguments[1:]))
    if first == ["proxy"]:
        from app_server.cli.proxy import main as proxy

        sys.exit(proxy(arguments[1:]))
    if arguments == ["--version"]:
        from app_server import __version__

        sys.stdout.write(f"codex-limits {__version__}\n")
        sys.exit(0)
    from app_server.cli.main import main as full

    full(arguments)


if __name__ == "__main__":
    main()
