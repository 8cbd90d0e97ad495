"""The simulator's error for bad input: a config field out of its allowed range.

Its own module so that every module that validates input (the config, the optimizer
registry, the engines) raises the same class without importing one another.
"""


class ConfigError(ValueError):
    """A config field is out of its allowed range (the message names it)."""
