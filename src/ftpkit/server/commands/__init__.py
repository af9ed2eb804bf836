"""Command handlers, one module per area; importing this package fills :data:`COMMANDS`.

- ``access``:   USER PASS ACCT QUIT
- ``datachan``: PORT EPRT PASV EPSV (the data connection's announcement)
- ``transfer``: RETR STOR STOU APPE LIST NLST MLSD REST ABOR ALLO
- ``files``:    CWD CDUP PWD MKD RMD DELE RNFR RNTO SIZE MDTM MLST
- ``info``:     SYST FEAT OPTS HELP STAT NOOP SITE TYPE MODE STRU
- ``security``: AUTH PBSZ PROT CCC (FTPS)
- ``integrity``: HASH RANG XSHA1 XSHA256 XSHA512 XMD5 XCRC MFMT MFF AVBL (OPTS HASH and SITE CHMOD from ``info``)
"""

from ftpkit.server.commands import access, datachan, files, info, integrity, security, transfer
from ftpkit.server.commands.table import COMMANDS, Spec, command

__all__ = ["COMMANDS", "Spec", "access", "command", "datachan", "files", "info", "integrity", "security",
           "transfer"]
