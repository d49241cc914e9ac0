"""Load tests (locust) against the HTTP API."""
