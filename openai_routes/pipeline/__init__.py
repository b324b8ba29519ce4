"""The generation pipeline: a request made ready for the engine (prepare, constraints, tool format), run (one
``GenerationRun`` for every endpoint) and read back (``ChoiceOutput``). No HTTP: the batch runner can drive it too.

Imports ``core`` and the shared wire schemas in ``protocol``; never ``server`` or ``endpoints``.
"""
