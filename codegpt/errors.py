"""The exceptions the library raises for a problem the user can fix. A script's top (configurator's
hook) prints one as a single `error: ...` line and exits 2, so the same function works from a
notebook or a test, where it is an ordinary exception."""


class UserError(Exception):
    """Bad input: one line that names the file, key or value and says what to do."""


class NetworkError(UserError):
    """The hub (or a mirror) could not be reached or refused: the network, not the user's files."""
