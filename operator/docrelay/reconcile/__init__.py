"""Pure decisions: what exists + what is wanted -> a plan, conditions and status. No I/O."""
