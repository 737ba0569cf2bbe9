"""Errors that the CLI turns into one line and exit code 2."""

import pickle


class ConfigError(ValueError):
    """A user mistake found before any process starts: the message names the key and the fix."""


class UnsafeCheckpoint(ConfigError, pickle.UnpicklingError):
    """A checkpoint file that was refused (it names code or non-tensor data) or cannot be read.

    It is also an `UnpicklingError`, so callers that guard a metadata read against pickle's own
    refusal keep catching it.
    """
