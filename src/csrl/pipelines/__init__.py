"""One library function per CLI command: load, run, write.

Each module holds what one ``csrl`` command does, callable from Python without argv: ``analyze``
(``analyze_model``), ``encode``, ``evaluate``, ``train``. The CLI parses arguments, calls the function and
prints its result; nothing here reads argv.
"""
