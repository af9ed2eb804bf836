#!/usr/bin/env python3
"""A coverage-guided fuzzing campaign (atheris, libFuzzer) on one of ftpkit's parsers of untrusted input.

    scripts/fuzz.py --list
    scripts/fuzz.py TARGET --seconds 600 [--work DIR] [--rss-limit-mb 2048] [--jobs 1]
    scripts/fuzz.py all --seconds 120          # each target in turn

The targets live in ``tests/fuzztargets.py`` (the suite replays their corpus and runs property tests on them; this
script is not part of the suite). The seed corpus comes from the project's real captures and dialogues; libFuzzer
adds what it finds to ``WORK/TARGET/corpus`` (default ``.fuzz/``). A crash (an exception other than the codec's own
error, a broken invariant, or more memory than ``--rss-limit-mb``) is written to ``WORK/TARGET/crashes``: copy it to
``tests/fuzz/corpus/TARGET/`` so the suite replays it from then on, and fix the bug.

Needs ``pip install atheris`` (binary wheels for CPython 3.8-3.13 on x86-64 Linux; elsewhere it builds from source
and needs clang with libFuzzer, e.g. Debian's ``clang`` and ``libclang-rt-dev``).
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "src")]


def _targets() -> dict[str, str]:
    import fuzztargets
    return {name: t.summary for name, t in fuzztargets.TARGETS.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", nargs="?", help="a target name, or 'all'")
    parser.add_argument("--seconds", type=int, default=60, help="how long to fuzz (per target with 'all')")
    parser.add_argument("--work", type=Path, default=ROOT / ".fuzz", help="corpus and crash folders go here")
    parser.add_argument("--rss-limit-mb", type=int, default=2048, help="a run above this memory is a crash")
    parser.add_argument("--max-len", type=int, default=1 << 16, help="largest input libFuzzer makes")
    parser.add_argument("--jobs", type=int, default=1, help="parallel fuzzing processes")
    parser.add_argument("--list", action="store_true", help="list the targets")
    args, extra = parser.parse_known_args()
    if args.list or not args.target:
        for name, summary in _targets().items():
            print(f"{name:16} {summary}")
        return 0 if args.list else 2
    if args.target != "all":
        return _fuzz(args.target, args, extra)  # imports the targets only once atheris instruments them
    worst = 0
    for name in _targets():
        cmd = [sys.executable, __file__, name, "--seconds", str(args.seconds), "--work", str(args.work),
               "--rss-limit-mb", str(args.rss_limit_mb), "--max-len", str(args.max_len), *extra]
        worst = max(worst, subprocess.call(cmd))
    return worst


def _fuzz(name: str, args: argparse.Namespace, extra: list[str]) -> int:
    try:
        import atheris
    except ImportError:
        print("fuzz.py: atheris is not installed: pip install atheris (see this script's help)", file=sys.stderr)
        return 2
    with atheris.instrument_imports(include=["ftpkit", "fuzztargets"]):
        import fuzztargets
    if name not in fuzztargets.TARGETS:
        print(f"fuzz.py: target: {name!r} is not one of {', '.join(fuzztargets.TARGETS)} or all", file=sys.stderr)
        return 2
    target = fuzztargets.TARGETS[name]
    corpus = args.work / name / "corpus"
    crashes = args.work / name / "crashes"
    corpus.mkdir(parents=True, exist_ok=True)
    crashes.mkdir(parents=True, exist_ok=True)
    for seed in fuzztargets.seeds(name):
        (corpus / hashlib.sha1(seed).hexdigest()).write_bytes(seed)

    def one_input(data: bytes) -> None:
        target.run(data)

    argv = [sys.argv[0], str(corpus), f"-max_total_time={args.seconds}", f"-rss_limit_mb={args.rss_limit_mb}",
            f"-max_len={args.max_len}", f"-artifact_prefix={crashes}/", "-print_final_stats=1", *extra]
    if args.jobs > 1:
        argv += [f"-jobs={args.jobs}", f"-workers={args.jobs}"]
    print(f"fuzz.py: {name} ({target.summary}) for {args.seconds} s; corpus {corpus}, crashes {crashes}", flush=True)
    atheris.Setup(argv, one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
