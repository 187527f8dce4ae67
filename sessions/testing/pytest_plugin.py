"""pytest plugin (registered through the ``pytest11`` entry point): the simulated gateway fixture.

The fixture itself is added with the gateway; this module exists so the entry point always loads.
"""
