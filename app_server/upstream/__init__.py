"""One Codex home and its backend, knowing no JSON-RPC.

`auth` (auth.json and its refresh), `backend` (the HTTP calls), `account` (CodexAccount and the
AccountRegistry), `mapping` (backend payloads to wire results), `errors`, `useragent`. `bodies`,
`payloads` and `shared` are the package's own.
"""

__all__ = ["account", "auth", "backend", "errors", "mapping", "useragent"]
