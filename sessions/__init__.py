"""Kalshi FIX session layer: a sans-IO FIXT.1.1 core, codec, logon signature, store and Trio driver."""
