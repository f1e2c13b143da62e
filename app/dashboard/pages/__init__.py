"""Dashboard pages; each module calls ``dash.register_page`` and defines its callbacks."""
