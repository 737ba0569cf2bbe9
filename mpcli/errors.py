"""Errors that the CLI turns into one line and exit code 2."""


class ConfigError(ValueError):
    """A user mistake found before any process starts: the message names the key and the fix."""
