"""HTTP API: thin routers over app.services, pydantic schemas, error mapping."""
