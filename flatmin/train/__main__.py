"""``python -m flatmin.train``: the training command (:mod:`flatmin.train.cli`)."""

from flatmin.train.cli import main

if __name__ == "__main__":
    main()
