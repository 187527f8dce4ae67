"""A simulated Kalshi FIX gateway with deterministic fault injection, for tests (like trio.testing)."""
