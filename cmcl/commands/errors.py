"""One-line messages for errors that crossed a process boundary on their way to the CLI.

Ray re-raises an exception from a task or actor as ``RayTaskError(<its
class>)``, whose text starts with the remote traceback; torch's DataLoader
re-raises a worker's exception as the same class with the worker's
traceback as its text. Both would turn an ``Error:`` line into a page.
"""

from __future__ import annotations

import errno


def original_error(error: BaseException) -> BaseException:
    """The exception a Ray task or actor raised, unwrapped from Ray's wrappers."""
    while type(error).__module__.startswith("ray.") and getattr(error, "cause", None) is not None:
        error = error.cause
    return error


def error_message(error: BaseException) -> str:
    """The message of ``error`` (see :func:`original_error`) on one line, naming the file
    of an OSError and what to do about a read-only or forbidden directory."""
    error = original_error(error)
    text = str(error)
    if text.startswith("Caught ") and "\nOriginal Traceback" in text:
        # torch: "Caught E in DataLoader worker process 0.\nOriginal Traceback ...\nmod.E: msg"
        last = text.rstrip().splitlines()[-1]
        name = type(error).__name__
        head, sep, rest = last.partition(": ")
        text = rest if sep and head.split(".")[-1] == name else last
    if (
        isinstance(error, OSError)
        and error.filename is not None
        and str(error.filename) not in text
    ):
        text = f"{error.filename}: {text}"
    if isinstance(error, OSError) and error.errno in (errno.EACCES, errno.EROFS):
        text += " (choose a writable directory, e.g. with --out, or fix its permissions)"
    return text
