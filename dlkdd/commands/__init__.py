"""The CLI verbs, one thin module each (registered in :mod:`dlkdd.cli`), each calling one stage of
:mod:`dlkdd.pipeline` or one tool; shared options in :mod:`.common`. Heavy imports live inside the
command functions, so ``dlkdd --help`` is instant."""
