"""The store tests: the contract runs on both stores (`store_backend`); PostgreSQL on a throwaway cluster
per test session, a fresh database per test."""

from tests.support.postgres import pg_url, postgres_cluster, postgres_url
from tests.support.store_backends import store_backend

__all__ = ["pg_url", "postgres_cluster", "postgres_url", "store_backend"]
