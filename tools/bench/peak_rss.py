#!/usr/bin/env python3
"""Runs a command and records its peak resident memory.

Usage: peak_rss.py OUT_FILE COMMAND [ARG...]
The command's stdout and stderr pass through; OUT_FILE gets the peak resident
set size of the command (and anything it waited for) in KiB, as the kernel
counts it (getrusage's ru_maxrss, what `/usr/bin/time -v` prints). The exit
status is the command's.
"""
import resource
import subprocess
import sys


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    code = subprocess.call(sys.argv[2:])
    with open(sys.argv[1], "w") as out:
        out.write(f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\n")
    sys.exit(code)


if __name__ == "__main__":
    main()
