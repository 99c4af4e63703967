"""`make demo`: the main story of docrelay, told on this machine."""
