"""`python -m app_server.dashboard`: the `codex-limits dashboard` command."""

import sys

from app_server.dashboard.run import main

sys.exit(main())
