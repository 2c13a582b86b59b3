"""propready's own state database: schema, engine, migrations and the named queries over them.

Every SQL statement propready runs against its state database lives in this package, in functions
whose names say what they do (style.md habit 5).
"""
