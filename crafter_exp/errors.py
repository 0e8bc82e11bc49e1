"""Errors whose message says everything a user needs: the entrypoint prints them as one line and exits non-zero."""


class StageFailed(RuntimeError):
    """A stage could not finish for a reason outside the program (a failed remote job, a service refusing)."""
