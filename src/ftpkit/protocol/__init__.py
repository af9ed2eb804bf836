"""The sans-I/O FTP protocol core: codecs and conversation state machines, no sockets, files or clocks.

Every other part of ftpkit (server, client, doctor, capture analyzer) calls these; none re-implements them.
"""

from ftpkit.protocol.commands import BadLine, Command, CommandReader, LineTooLong, format_command
from ftpkit.protocol.conversation import Answer, ClientConversation, ServerConversation
from ftpkit.protocol.errors import CommandError, HostPortError, ProtocolError, ReplyError, StateError
from ftpkit.protocol.features import format_features, parse_features
from ftpkit.protocol.hostport import (
    HostPort,
    explain_port,
    format_eprt,
    format_epsv,
    format_pasv,
    format_port,
    parse_eprt,
    parse_epsv,
    parse_epsv_arg,
    parse_pasv,
    parse_port,
)
from ftpkit.protocol.pathname import format_257_path, parse_257_path
from ftpkit.protocol.replies import MalformedReply, Reply, ReplyReader, format_reply

__all__ = [
    "Answer",
    "BadLine",
    "ClientConversation",
    "Command",
    "CommandError",
    "CommandReader",
    "HostPort",
    "HostPortError",
    "LineTooLong",
    "MalformedReply",
    "ProtocolError",
    "Reply",
    "ReplyError",
    "ReplyReader",
    "ServerConversation",
    "StateError",
    "explain_port",
    "format_257_path",
    "format_command",
    "format_eprt",
    "format_epsv",
    "format_features",
    "format_pasv",
    "format_port",
    "format_reply",
    "parse_257_path",
    "parse_eprt",
    "parse_epsv",
    "parse_epsv_arg",
    "parse_features",
    "parse_pasv",
    "parse_port",
]
