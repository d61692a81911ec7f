"""The one exception type for mistakes a user can fix (bad input, unknown model, bad file).

The CLI prints these as one line and exits non-zero; the app shows them as a message.
Anything else that escapes is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input or an unusable resource, described in words the user can act on."""
