"""Layer 0: the errors a user can cause, under one base the command line catches once.

`MotionMAEError` is a failure (exit code 1): an unreadable file, a missing cache entry,
a run that diverged. `UsageError` is a mistake in what was asked (exit code 2, as
argparse's own): a bad config value, flag, argument or method option. Every other
exception is a bug and keeps its traceback.
"""


class MotionMAEError(Exception):
    """An error a user can cause; its message is one line that names the file or value."""

    exit_code = 1  # a failure: the request was fine, an input or the run was not


class UsageError(MotionMAEError, ValueError):
    """A bad config value, command-line flag or argument, or method option."""

    exit_code = 2
