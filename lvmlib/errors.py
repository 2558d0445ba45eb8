"""One exit-code policy for every `lvm` command: 0 success, 2 bad input or environment
(an `InputError`, whose message names the file, key or line and what to do), 1 an internal
error (any other exception; its traceback is shown)."""
from __future__ import annotations

EXIT_OK, EXIT_INTERNAL, EXIT_INPUT = 0, 1, 2


class InputError(ValueError):
    """Bad input or a bad environment: the user can fix it. `lvm` exits 2 without a traceback."""
