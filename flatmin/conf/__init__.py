"""flatmin's Hydra configs, shipped inside the package: one folder per config group.

The training command composes ``config.yaml`` from here (``pkg://flatmin.conf``); the library reads
the optimizer options from here too (:mod:`flatmin.optim.registry`), through
``importlib.resources``, so an installed flatmin needs no source tree. A user's own options go in a
folder of the same layout given with ``--config-dir``.
"""
