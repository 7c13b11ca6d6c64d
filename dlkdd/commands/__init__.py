"""Click commands, one module per pipeline step; registered on the group in :mod:`dlkdd.cli`.

Heavy imports (torch, av, zarr) stay inside the command functions so ``dlkdd --help`` is instant.
"""
