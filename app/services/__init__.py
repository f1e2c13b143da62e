"""Plain service functions over a SQLAlchemy ``Session``; the API, CLI and workers call them."""
