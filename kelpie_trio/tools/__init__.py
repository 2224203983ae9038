"""Tools: schemas derived from source (schema.py), the base tools (base.py), and the
sandbox custom tools run in, outside the server (sandbox.py, _runner.py), inside the
namespaces _jail.py builds; whether this host can build them (isolation.py); cached
venvs for tools' pip requirements (envs.py)."""
