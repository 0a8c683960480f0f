"""Parses every insight SQL file as Trino (Athena) SQL with sqlglot; exits 1 naming the file,
line and column of the first error. usage: python parse_trino.py FILE.sql..."""

import sys

import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, ParseError

failed = False
for path in sys.argv[1:]:
    text = open(path).read()
    try:
        statements = sqlglot.parse(text, read="trino", error_level=ErrorLevel.RAISE)
    except ParseError as e:
        err = e.errors[0] if e.errors else {}
        print(f"{path}:{err.get('line', '?')}:{err.get('col', '?')}: {err.get('description', e)}")
        failed = True
        continue
    statements = [s for s in statements if s is not None]
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        print(f"{path}: expected exactly one query (a SELECT), found {len(statements)} statement(s)")
        failed = True
        continue
    print(f"{path}: ok")
sys.exit(1 if failed else 0)
