"""The exit codes of every `lvm` command: 0 success, 2 an InputError (bad input or environment:
one line naming the file, key or line; no traceback), 1 any other exception (traceback shown)."""
EXIT_OK, EXIT_INTERNAL, EXIT_INPUT = 0, 1, 2


class InputError(ValueError):
    """Bad input or a bad environment, which the user can fix."""
