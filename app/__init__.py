"""HTTP API and the domain layer shared with the workers."""
