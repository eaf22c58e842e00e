"""The precision plan: which precision every node runs in, and which rule chose it."""
