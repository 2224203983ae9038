"""Values: attrs records for agents, blocks and the rest, and the one converter for them."""
