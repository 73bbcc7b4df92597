"""Everything that touches PostgreSQL, and nothing else does: the call log writer and its
journal, the catalog, the webhook outbox, admin queries, migrations; ``port`` is the
protocol the call core needs, ``pg_store`` and ``memory_store`` its implementations."""
