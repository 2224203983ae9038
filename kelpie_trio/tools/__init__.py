"""Custom tools: deriving a tool's JSON schema from its Python source, without running it."""
