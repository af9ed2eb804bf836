"""``ftpkit doctor``: probe a server step by step and say which connection fails, in which mode, why, and what to
change. Entry point: :func:`run_doctor`; rendering in :mod:`ftpkit.doctor.render`."""

from ftpkit.doctor.model import Check, DoctorReport, Facts
from ftpkit.doctor.run import DoctorOptions, run_doctor

__all__ = ["Check", "DoctorOptions", "DoctorReport", "Facts", "run_doctor"]
