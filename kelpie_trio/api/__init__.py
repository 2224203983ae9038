"""The HTTP surface (Letta's REST API on Quart-Trio): parse, call the service, render."""
