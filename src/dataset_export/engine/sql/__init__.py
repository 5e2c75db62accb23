"""SQL compilation: ``compiler.py`` holds what every dialect shares, one module per dialect.

- ``compiler.py``: ``SqlCompiler`` (the walk from a ``Query`` to text and parameters, the
  safety rules and the semantics), ``CompiledQuery``, ``output_type``, ``check_identifier``.
- ``duckdb_dialect.py``: DuckDB's spellings, ``compile_query`` (result columns) and
  ``compile_export`` (rows rendered as CSV or JSONL lines in SQL).

A new dialect is a module beside ``duckdb_dialect.py`` with its own ``SqlCompiler`` subclass.
"""
