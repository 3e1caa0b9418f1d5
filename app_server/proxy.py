"""`python -m app_server.proxy [--sock PATH]`: the leanest way to spawn `codex-limits proxy`."""

import sys

from app_server.cli.proxy import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
