"""Supervision tree: runs every endpoint session under its own key."""
