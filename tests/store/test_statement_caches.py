"""What a node keeps per statement text: what it worked out about short texts, never about long ones.

An application sends the same few hundred short statements over and over, and
the node keeps what it worked out about each (classification, declared types,
transaction control, session pragmas), up to 4,096 texts per cache. Long texts
were kept too: 4,096 statements of 1 MB each were up to 4 GB of the node's
memory, per cache, for statements that seldom come twice.
"""

import sqlite3

import pytest

from django_dqcluster.store.classify import Classifier, session_pragma
from django_dqcluster.store.statements import MAX_CACHED_SQL, transaction_control

LONG_COMMENT = " -- " + "x" * MAX_CACHED_SQL


@pytest.fixture
def conn():
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (v)")
    yield conn
    conn.close()


@pytest.mark.parametrize("sql, writes", [
    ("SELECT v FROM t", False),
    ("INSERT INTO t VALUES (1)", True),
])
def test_a_long_statement_is_classified_as_a_short_one_is_and_not_kept(conn, sql, writes):
    classifier = Classifier()
    assert classifier(conn, sql, None).writes is writes  # short: kept
    kept = classifier.classify.cache_info().currsize, len(classifier._known_reads)
    for n in range(3):
        info = classifier(conn, f"{sql} /* {n} */{LONG_COMMENT}\n", None)
        assert info.writes is writes and info.refusal() is None
    assert (classifier.classify.cache_info().currsize, len(classifier._known_reads)) == kept


def test_transaction_control_and_session_pragmas_answer_long_texts_without_keeping_them():
    kept = transaction_control.cache_info().currsize, session_pragma.cache_info().currsize
    assert transaction_control("/*" + "x" * MAX_CACHED_SQL + "*/ COMMIT") == "commit"
    assert session_pragma("PRAGMA foreign_keys = OFF" + " " * MAX_CACHED_SQL) == ("foreign_keys", 0)
    assert (transaction_control.cache_info().currsize, session_pragma.cache_info().currsize) == kept
    assert transaction_control("COMMIT") == "commit"
    assert transaction_control.cache_info().currsize in (kept[0], kept[0] + 1)  # short: kept (if not already)
