"""bench/: how many conversations kelpie-trio carries per core, and what it adds to the LLM's
own latency, next to the framework floor measured in the same run. See bench/RESULTS.md.

    python -m bench                  # the steady scenario
    python -m bench all              # every scenario at its default size
    python -m bench --smoke          # CI's ~20 s run

Nothing is imported here: `kelpie-trio --help` builds the bench's parser (bench/cli.py) on an
install without the bench's extras (psutil, rich, matplotlib).
"""

SCENARIOS = (
    "steady",
    "hot-agent",
    "cold-activation",
    "streaming",
    "idle-footprint",
    "two-nodes",
    "agents-messaging",
    "conversations",
    "approvals",
    "mcp-calls",
    "idle",
    "file-ingestion",
    "schedules",
)
