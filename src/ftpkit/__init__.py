"""ftpkit: an FTP toolkit that makes FTP work and makes its failures obvious."""

__version__ = "0.1.0"
