"""Test-only helpers: real servers, template databases, worker processes."""
