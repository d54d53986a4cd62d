from tests.test_cli import *  # noqa
from tests.test_cli import execute

def test_dbg(run, db_url):
    execute(db_url, "DROP TABLE orders")
    r = run("sync"); print("RESULT", r.exit_code, r.output)
