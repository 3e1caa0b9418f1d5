"""`python -m app_server.dashboard`: the `codex-limits dashboard` command."""

import sys

from .run import main

sys.exit(main())
