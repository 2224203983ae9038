"""The node and its nursery tree (the actor runtime grows here)."""
