"""Errors raised for bad user input, before any heavy work starts."""


class FIAInputError(ValueError):
    """A user-facing problem: the message names the input and says how to fix it."""
