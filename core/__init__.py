"""The base layer: settings and access to PostgreSQL and Redis, importable by every package."""
