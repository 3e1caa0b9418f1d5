"""codex-limits app-server: stdio JSON-RPC server for Codex rate limits, reset credits and an account pool."""

__version__ = "0.1.0"
