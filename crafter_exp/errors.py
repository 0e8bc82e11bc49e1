"""Errors whose message says everything a user needs: the entrypoint prints them as one line and exits non-zero.

Only these are turned into one line: any other exception is a bug and keeps its traceback.
"""


class UserError(ValueError):
    """Bad input (a config value, a missing or malformed file, an option that does not fit): exit 2, before work starts.

    A `ValueError` so that library callers catching `ValueError` keep working.
    """


class StageFailed(RuntimeError):
    """A stage could not finish for a reason outside the program (a failed remote job, a service refusing)."""
