"""The OpenAI-compatible server: engine, adapters, cache, guardrails, auth, metrics."""
