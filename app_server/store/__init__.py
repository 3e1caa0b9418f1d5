"""Storage: the apply ledger, pending markers, apply locks and usage history (SQLite or PostgreSQL)."""
