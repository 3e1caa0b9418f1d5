"""Wire models of the Codex app-server rate-limit surface, plus codex-limits' pool extension.

Pure data: pydantic models, the method table and JSON Schema export. No I/O and no
imports from `app_server`; clients and bindings can depend on this package alone.
"""
