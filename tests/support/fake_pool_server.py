"""A stand-in for `codex-limits serve` that answers from a script: `python fake_pool_server.py SCRIPT.json`.

SCRIPT maps a method name to `{"result": ...}` or `{"error": {...}}`; `initialize` is answered on its own.
It lets the CLI be tested against answers our own server does not give yet (a newer pool's fields, an
ambiguous failure whose attempt the ledger does not show). Standard library only.
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        script = json.load(f)
    for line in sys.stdin:
        if not line.strip():
            continue
        message = json.loads(line)
        if "id" not in message:
            continue
        method = message.get("method")
        if method == "initialize":
            answer = {"id": message["id"], "result": {"userAgent": "fake", "codexHome": "/nowhere"}}
        elif method in script:
            answer = {"id": message["id"], **script[method]}
        else:
            answer = {"id": message["id"], "error": {"code": -32601, "message": f"no {method} in the script"}}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
