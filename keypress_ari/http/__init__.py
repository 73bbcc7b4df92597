"""The admin HTTP API (aiohttp): catalog CRUD, blocklist, calls, dry run, probes, metrics."""

from keypress_ari.http.app import AdminServer, create_admin_app

__all__ = ["AdminServer", "create_admin_app"]
