"""The store tests run against a real PostgreSQL server: a throwaway cluster per test session."""

from tests.support.postgres import pg_url, postgres_cluster, postgres_url

__all__ = ["pg_url", "postgres_cluster", "postgres_url"]
