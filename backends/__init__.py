"""Framework adapters: one module per framework behind tensortap.core.backend.Backend."""
