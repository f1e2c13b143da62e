"""kanscope application: FastAPI service, storage, executors, dashboard and CLI."""

__version__ = "0.1.0"
