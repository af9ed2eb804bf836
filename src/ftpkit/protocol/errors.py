"""The protocol core's own errors: every codec raises only these (or subclasses)."""


class ProtocolError(ValueError):
    """Input that is not valid FTP, or a request the protocol cannot express."""


class CommandError(ProtocolError):
    """A command line that cannot be parsed or formatted."""


class ReplyError(ProtocolError):
    """A reply that cannot be parsed or formatted."""


class HostPortError(ProtocolError):
    """A PORT/EPRT argument or a 227/229 reply that does not carry a usable address and port."""


class StateError(ProtocolError):
    """A conversation step that is out of order (a bug in the caller, not bad input from a peer)."""
