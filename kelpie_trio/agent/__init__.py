"""The agent: the step logic as plain functions (step.py, memory.py), the actor doing the I/O."""
