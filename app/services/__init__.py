"""Domain services shared by the API and the workers: they take a Session, flush, and never commit."""
