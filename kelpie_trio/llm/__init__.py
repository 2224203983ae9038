"""LLM providers behind one interface (types.py); the simulated one lives in kelpie_trio.sim."""
