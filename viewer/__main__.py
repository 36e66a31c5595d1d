"""``python -m viewer [SCENE]``: the same as ``python main.py view [SCENE]``."""

import sys

from viewer.app import run_viewer

if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("-")]
    sys.exit(run_viewer(args[0] if args else None, sys.argv))
