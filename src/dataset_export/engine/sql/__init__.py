"""SQL compilation: ``compiler.py`` holds what every dialect shares, one module per dialect.

- ``compiler.py``: ``SqlCompiler`` (the walk from a ``Query`` to text and parameters, the
  safety rules and the semantics), ``CompiledQuery``, ``output_type``, ``check_identifier``.
- ``duckdb_dialect.py``: DuckDB's spellings, ``compile_query`` (result columns) and
  ``compile_export`` (rows rendered as CSV or JSONL lines in SQL).
- ``bigquery_dialect.py``: GoogleSQL's spellings, ``compile_query`` over a table path
  ``project.dataset.table`` with typed named parameters (``QueryParameter``); rendering the rows
  stays ours.

A new dialect is a module beside these with its own ``SqlCompiler`` subclass.
"""
