"""The one exception type for bad user input (exit code 2 at the CLI)."""


class BadInput(Exception):
    """A problem with what the user gave us: recipe, data path, checkpoint, plan, model file.

    The message is one line that names the problem and, where possible, the fix.
    """
