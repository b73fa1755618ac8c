"""A node follows its secret file: each step of a rotation takes effect without a restart.

The file is read every few seconds; a change is put in use once two reads
in a row agree (never a half-written file), a file that cannot be used
leaves the node on the secrets it has and says why, and sessions opened with
a secret the file no longer holds are closed. A driver given the file reads
it again when it reconnects.
"""

import time

import pytest

from django_dqcluster import dbapi
from django_dqcluster.store.secret_file import SecretFileWatch

from .conftest import start_embedded_node

OLD, NEW = "the-old-cluster-secret", "the-new-cluster-secret"


class Applied(list):
    """What a watch put in use, in order: [(secret, fallbacks), ...]."""

    def __call__(self, secret, fallbacks):
        self.append((secret, tuple(fallbacks)))


@pytest.fixture
def secret_path(tmp_path):
    path = tmp_path / "cluster.secret"
    path.write_text(OLD + "\n")
    return path


# -- the watch ------------------------------------------------------------------------------------


def test_a_changed_file_is_put_in_use_once_two_reads_agree(secret_path):
    applied = Applied()
    watch = SecretFileWatch(str(secret_path), (OLD,), applied)
    assert watch.check() is False and applied == []  # nothing changed
    secret_path.write_text(f"{NEW}\n{OLD}\n")
    assert watch.check() is False and applied == []  # it might be half-written
    assert watch.check() is True
    assert applied == [(NEW, (OLD,))]
    assert watch.status()["changes"] == 1 and watch.status()["changed_seconds_ago"] is not None
    assert watch.check() is False and len(applied) == 1  # in use: nothing more to do


def test_a_file_still_being_written_is_not_taken_for_a_secret(secret_path):
    applied = Applied()
    watch = SecretFileWatch(str(secret_path), (OLD,), applied)
    for partial in (f"{OLD}\nthe-n", f"{OLD}\nthe-new-clus", f"{OLD}\n{NEW}\n"):
        secret_path.write_text(partial)
        watch.check()
    assert applied == []
    watch.check()
    assert applied == [(OLD, (NEW,))]


@pytest.mark.parametrize("damage", ["emptied", "removed"])
def test_a_file_that_holds_no_secret_leaves_the_node_on_its_secrets_and_says_why(secret_path, damage):
    applied = Applied()
    watch = SecretFileWatch(str(secret_path), (OLD,), applied)
    if damage == "emptied":
        secret_path.write_text("\n  \n")
    else:
        secret_path.unlink()
    for _ in range(3):
        assert watch.check() is False
    assert applied == []
    assert str(secret_path) in watch.status()["error"]
    secret_path.write_text(OLD + "\n")  # put back as it was
    watch.check()
    assert watch.status()["error"] is None and applied == []


def test_secrets_the_node_cannot_use_are_reported_and_tried_again(secret_path):
    attempts = []

    def refuse(secret, fallbacks):
        attempts.append(secret)
        raise ValueError("no cipher for that")

    watch = SecretFileWatch(str(secret_path), (OLD,), refuse)
    secret_path.write_text(f"{NEW}\n{OLD}\n")
    watch.check()
    watch.check()
    assert attempts == [NEW]
    assert "could not be put in use: no cipher for that" in watch.status()["error"]
    watch.check()
    watch.check()
    assert attempts == [NEW, NEW]


# -- a node started from a secret file --------------------------------------------------------------


@pytest.fixture
def watching_node(tmp_path, secret_path):
    node = start_embedded_node(tmp_path / "node", secret=None, secret_file=str(secret_path),
                               secret_check_interval=0.05)
    yield node
    node.stop()


def connect(node, **kwargs):
    kwargs.setdefault("timeout", 5)
    return dbapi.connect(node.config.client, isolation_level=None, **kwargs)


def rewrite(node, path, text):
    """Write the secret file and wait until the node put it in use."""
    changes = node.status()["secret_file"]["changes"]
    path.write_text(text)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if node.status()["secret_file"]["changes"] > changes:
            return
        time.sleep(0.02)
    raise AssertionError(f"the node did not take up {path} within 10 s")


def test_a_node_takes_each_step_of_a_rotation_without_a_restart(watching_node, secret_path):
    node = watching_node
    assert node.config.secret == OLD  # read from the file at start
    with pytest.raises(dbapi.InterfaceError, match="authentication failed"):
        connect(node, secret=NEW)

    rewrite(node, secret_path, f"{OLD}\n{NEW}\n")  # 1. the new secret accepted
    connect(node, secret=NEW).close()
    old_session = connect(node, secret=OLD)
    assert old_session.execute("SELECT 1").fetchone() == (1,)

    rewrite(node, secret_path, f"{NEW}\n{OLD}\n")  # 2. the new secret used
    assert node.status()["secret_fallbacks"]["count"] == 1
    assert old_session.execute("SELECT 2").fetchone() == (2,)  # still accepted

    rewrite(node, secret_path, f"{NEW}\n")  # 3. the old secret dropped
    with pytest.raises(dbapi.Error):
        old_session.execute("SELECT 3")  # closed by the node; reconnecting with OLD is refused
    with pytest.raises(dbapi.InterfaceError, match="authentication failed"):
        connect(node, secret=OLD)
    status = node.status()
    assert status["secret_fallbacks"] is None and status["secret_file"]["error"] is None


def test_a_connection_given_the_file_follows_the_rotation_unbroken(watching_node, secret_path):
    node = watching_node
    conn = connect(node, secret_file=str(secret_path))
    conn.execute("CREATE TABLE t (n INTEGER)")
    for step, text in enumerate((f"{OLD}\n{NEW}\n", f"{NEW}\n{OLD}\n", f"{NEW}\n")):
        rewrite(node, secret_path, text)
        conn.execute("INSERT INTO t VALUES (?)", (step,))  # at step 3 its session is closed: it reconnects with NEW
    assert conn.execute("SELECT n FROM t ORDER BY n").fetchall() == [(0,), (1,), (2,)]
    conn.close()


def test_a_node_whose_file_was_emptied_keeps_serving_and_says_why(watching_node, secret_path):
    node = watching_node
    secret_path.write_text("")
    deadline = time.monotonic() + 10
    while node.status()["secret_file"]["error"] is None:
        assert time.monotonic() < deadline, "the node did not report the emptied file"
        time.sleep(0.02)
    assert "holds no secret" in node.status()["secret_file"]["error"]
    conn = connect(node, secret=OLD)
    assert conn.execute("SELECT 42").fetchone() == (42,)
    conn.close()


def test_a_driver_takes_one_credential_and_says_which_it_was_given_twice(tmp_path, secret_path):
    with pytest.raises(dbapi.ProgrammingError, match="give one of secret, secret_file, token and token_file, "
                                                     "not secret and secret_file"):
        dbapi.connect("127.0.0.1:1", secret=OLD, secret_file=str(secret_path))
    empty = tmp_path / "token"
    empty.write_text("\n")
    with pytest.raises(dbapi.InterfaceError, match=f"the client token file {empty} is empty"):
        dbapi.connect("127.0.0.1:1", token_file=str(empty))
    with pytest.raises(dbapi.InterfaceError, match="cannot read the cluster secret from /nonexistent/secret"):
        dbapi.connect("127.0.0.1:1", secret_file="/nonexistent/secret")


def test_a_driver_given_a_token_file_connects_with_the_token_it_holds(watching_node, tmp_path):
    from django_dqcluster import wire

    token = tmp_path / "token"
    token.write_text(wire.client_token(OLD, read_only=True) + "\n")
    conn = connect(watching_node, token_file=str(token))
    assert conn.execute("SELECT 7").fetchone() == (7,)
    with pytest.raises(dbapi.OperationalError, match="read-only"):
        conn.execute("CREATE TABLE t (n INTEGER)")
    conn.close()


def test_a_change_that_drops_the_secret_in_use_is_refused_as_no_step_of_a_rotation(secret_path):
    # `echo new >> secret` on a file without a final newline: one line, neither secret.
    applied = Applied()
    watch = SecretFileWatch(str(secret_path), (OLD,), applied)
    secret_path.write_text(OLD + NEW)
    watch.check()
    watch.check()
    assert applied == []
    assert "no longer holds the secret this node uses" in watch.status()["error"]
    secret_path.write_text(f"{OLD}\n{NEW}\n")  # mended: the new secret on a line of its own
    watch.check()
    watch.check()
    assert applied == [(OLD, (NEW,))] and watch.status()["error"] is None
