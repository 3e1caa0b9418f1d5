"""`python -m app_server` is `codex-limits serve`."""

import sys

from app_server.cli.main import main

if __name__ == "__main__":
    main(["serve", *sys.argv[1:]])
