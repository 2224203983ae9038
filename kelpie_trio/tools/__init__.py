"""Tools: schemas derived from source (schema.py), the base tools (base.py), and the
sandbox custom tools run in, outside the server (sandbox.py, _runner.py)."""
