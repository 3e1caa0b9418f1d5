"""`python -m app_server` is `codex-limits serve`."""

import sys

if __name__ == "__main__":
    if len(sys.argv) == 1:
        # What clients spawn: stdio with no flags. Straight to the server, without building the whole CLI.
        import gc

        gc.disable()  # start-up allocates only long-lived objects; serve_stdio freezes them and re-enables

        from app_server.server import serve_default

        sys.exit(serve_default())
    from app_server.cli.main import main

    main(["serve", *sys.argv[1:]])
