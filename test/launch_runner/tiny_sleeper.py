#!/usr/bin/env python3
"""Test-only process: records its pid and command line in ``<folder>/<pid>``, then sleeps until
SIGINT or SIGTERM, on which it exits with status 0 (a clean stop)."""

import os
import signal
import sys
import time
from pathlib import Path

SLEEP_S = 60.0
"""Longest life of the process (a test that forgets it does not leave it forever)."""


def main() -> None:
    folder = Path(sys.argv[1])
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: sys.exit(0))
    record = folder / str(os.getpid())
    record.with_suffix('.tmp').write_text('\0'.join(sys.argv))
    record.with_suffix('.tmp').rename(record)  # complete once visible
    time.sleep(SLEEP_S)


if __name__ == '__main__':
    main()
