"""``python train.py [group=option ...] [key=value ...]``: in a clone, the same command as ``flatmin-train``."""

from flatmin.train.cli import main

if __name__ == "__main__":
    main()
