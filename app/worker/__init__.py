"""Executors: where training runs. The database is the source of truth; executors carry ids."""
