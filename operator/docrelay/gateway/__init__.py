"""The gateway: document events in, verified and deduplicated; the run broker."""
