"""Security of the store, as a specification: secrets, loopback binds, the client port's
handshake and framing against hostile input, and the Raft port against unauthenticated peers.

Raw-socket tests talk to a real node on a 127.0.0.1 free port with a small frame limit; after
each attack a normal client must still be served and the data must be intact.
"""

import os
import pickle
import socket
import stat
import struct
import time
import uuid
import zlib

import msgpack
import pytest

from django_dqcluster import dbapi, wire
from django_dqcluster.store import Node, NodeConfig
from django_dqcluster.store.cipher import RaftCipher
from django_dqcluster.store.config import ConfigError
from django_dqcluster.store.local_cluster import free_ports

from .conftest import rows_on_every_node, start_embedded_node

SECRET = "security-test-secret"
MAX_FRAME = 4096
SENTINEL = "sentinel"


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """A one-node store with a configured secret and a 4 KiB frame limit, holding a sentinel row."""
    running = start_embedded_node(tmp_path_factory.mktemp("security") / "node", SECRET, max_frame=MAX_FRAME)
    conn = client(running)
    conn.execute(f"CREATE TABLE {SENTINEL} (v)")
    conn.execute(f"INSERT INTO {SENTINEL} VALUES ('intact')")
    conn.close()
    yield running
    running.stop()


def client(node, **kwargs):
    kwargs.setdefault("secret", SECRET)
    kwargs.setdefault("isolation_level", None)
    kwargs.setdefault("timeout", 5)
    return dbapi.connect(node.config.client, **kwargs)


def assert_still_serves(node):
    """A normal client is authenticated and answered, and the data is intact."""
    conn = client(node)
    try:
        assert conn.execute(f"SELECT v FROM {SENTINEL}").fetchall() == [("intact",)]
        assert conn.execute("SELECT 1 + 1").fetchone() == (2,)
    finally:
        conn.close()


def tables(node):
    conn = client(node)
    try:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()


def raw_socket(node):
    """A TCP connection to the client port, with the node's hello already read."""
    sock = socket.create_connection(wire.parse_address(node.config.client), timeout=5)
    hello = wire.recv_frame(sock)
    assert hello["t"] == "hello"
    return sock, hello


def authenticated_socket(node, secret=SECRET):
    sock, hello = raw_socket(node)
    token = wire.client_token(secret)
    wire.send_frame(sock, {"t": "auth", "mac": wire.mac(token, hello["nonce"], b"client"), "nonce": wire.new_nonce()})
    welcome = wire.recv_frame(sock)
    assert welcome["t"] == "welcome"
    return sock


def frames_until_closed(sock, timeout=5.0):
    """Every frame the node sends until it closes the connection.

    Fails if the node neither closes nor answers within ``timeout``: a hostile
    frame must get an error frame or a closed connection, not a hung session.
    """
    sock.settimeout(timeout)
    frames = []
    try:
        while True:
            frames.append(wire.recv_frame(sock, 1 << 20))
    except (wire.ConnectionClosed, ConnectionResetError):
        return frames
    except socket.timeout:
        if frames:
            return frames
        raise AssertionError("the node neither answered nor closed the connection") from None
    finally:
        sock.close()


def assert_refused(frames):
    """Nothing but error frames came back (possibly none: a plain close)."""
    for frame in frames:
        assert frame.get("t") == "error" or frame.get("ok") is False, frame
        assert frame.get("t") != "welcome"


# -- configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize("membership", [{"peers": ["127.0.0.1:7102"]}, {"join": "127.0.0.1:7103"}])
def test_a_multi_node_config_without_a_secret_is_refused_naming_secret(tmp_path, membership):
    with pytest.raises(ConfigError, match=r"^secret"):
        NodeConfig(bind="127.0.0.1:7100", data_dir=str(tmp_path), **membership)
    NodeConfig(bind="127.0.0.1:7100", data_dir=str(tmp_path), secret="s", **membership)  # with one: fine


@pytest.mark.parametrize("addresses, setting", [
    ({"bind": "10.0.0.1:7000"}, "bind"),
    ({"bind": "0.0.0.0:7000", "client": "127.0.0.1:7001"}, "bind"),
    ({"bind": "127.0.0.1:7000", "client": "10.0.0.1:7001"}, "client"),
])
def test_a_non_loopback_address_is_refused_unless_allow_remote(tmp_path, addresses, setting):
    with pytest.raises(ConfigError, match=rf"^{setting}: .*allow_remote"):
        NodeConfig(data_dir=str(tmp_path), **addresses)
    # Only the configuration is built; nothing listens on or sends to these addresses.
    config = NodeConfig(data_dir=str(tmp_path), allow_remote=True, **addresses)
    assert config.allow_remote


def test_loopback_addresses_need_no_allow_remote(tmp_path):
    for bind in ("127.0.0.1:7000", "localhost:7000", "[::1]:7000"):
        NodeConfig(bind=bind, data_dir=str(tmp_path))


def test_a_one_node_store_without_a_secret_creates_one_readable_only_by_its_owner(tmp_path):
    raft_port, client_port = free_ports(2)
    data_dir = tmp_path / "lonely"
    node = Node(NodeConfig(bind=f"127.0.0.1:{raft_port}", client=f"127.0.0.1:{client_port}",
                           data_dir=str(data_dir))).start()
    try:
        node.wait_ready(15)
        secret_file = data_dir / "cluster.secret"
        assert stat.S_IMODE(os.stat(secret_file).st_mode) == 0o600
        generated = secret_file.read_text().strip()
        assert len(generated) >= 32
        # It is the secret the node enforces: it lets a client in, and anything else does not.
        conn = client(node, secret=generated)
        assert conn.execute("SELECT 1").fetchone() == (1,)
        conn.close()
        with pytest.raises(dbapi.InterfaceError):
            client(node, secret="not-the-generated-secret")
    finally:
        node.stop()


# -- client authentication ------------------------------------------------------------------------


@pytest.mark.parametrize("credentials", [
    {"secret": "wrong-secret"},
    {"secret": None, "token": wire.client_token("wrong-secret")},
    {"secret": None, "token": SECRET},  # the secret itself is not the token
    {"secret": None},
], ids=["wrong-secret", "wrong-token", "secret-as-token", "no-credentials"])
def test_a_wrong_secret_or_token_is_refused_and_the_node_keeps_serving_the_right_one(node, credentials):
    started = time.monotonic()
    with pytest.raises(dbapi.InterfaceError, match="authentication failed"):
        client(node, **credentials)
    assert time.monotonic() - started < 3, "a refusal is final, not retried until the timeout"
    assert_still_serves(node)


def test_a_client_that_skips_the_handshake_gets_nothing_executed(node):
    victim = f"skipped_{uuid.uuid4().hex[:8]}"
    request = {"id": 1, "op": "exec", "sql": f"CREATE TABLE {victim} (a)"}
    # Straight after the hello, in place of the auth frame...
    sock, _ = raw_socket(node)
    wire.send_frame(sock, request)
    assert_refused(frames_until_closed(sock))
    # ...and without even reading the hello.
    sock = socket.create_connection(wire.parse_address(node.config.client), timeout=5)
    wire.send_frame(sock, request)
    frames = frames_until_closed(sock)
    assert frames and frames[0]["t"] == "hello"
    assert_refused(frames[1:])
    assert victim not in tables(node)
    assert_still_serves(node)


def test_a_failed_authentication_ends_the_session_before_any_request(node):
    victim = f"after_bad_auth_{uuid.uuid4().hex[:8]}"
    sock, hello = raw_socket(node)
    wrong = wire.client_token("wrong-secret")
    wire.send_frame(sock, {"t": "auth", "mac": wire.mac(wrong, hello["nonce"], b"client"), "nonce": wire.new_nonce()})
    try:
        wire.send_frame(sock, {"id": 1, "op": "exec", "sql": f"CREATE TABLE {victim} (a)"})
    except OSError:
        pass  # already closed by the node
    assert_refused(frames_until_closed(sock))
    assert victim not in tables(node)
    assert_still_serves(node)


def test_an_auth_frame_replaying_an_old_mac_is_refused(node):
    sock, hello = raw_socket(node)
    token = wire.client_token(SECRET)
    recorded = wire.mac(token, hello["nonce"], b"client")
    wire.send_frame(sock, {"t": "auth", "mac": recorded, "nonce": wire.new_nonce()})
    assert wire.recv_frame(sock)["t"] == "welcome"
    sock.close()
    replay, _ = raw_socket(node)  # a new connection gets a new nonce
    wire.send_frame(replay, {"t": "auth", "mac": recorded, "nonce": wire.new_nonce()})
    assert_refused(frames_until_closed(replay))
    assert_still_serves(node)


# -- SQL that would reach past the replicated database ------------------------------------------
#
# A client may run any SQL on its database, and nothing else: not the node's host's
# files, not the node process's memory, not one replica's file behind the log's back.


def read_only_client(node):
    return client(node, secret=None, token=wire.client_token(SECRET, read_only=True))


CLIENTS = {"full": client, "read-only": read_only_client}


@pytest.mark.parametrize("who", CLIENTS)
@pytest.mark.parametrize("statement", [
    "VACUUM INTO '{path}'",
    "/* a comment first */ vacuum main into '{path}'",
    "VACUUM",
])
def test_vacuum_is_refused_and_writes_no_file_on_the_nodes_host(node, tmp_path, who, statement):
    target = tmp_path / "copied-out.db"
    conn = CLIENTS[who](node)
    try:
        with pytest.raises(dbapi.OperationalError, match="VACUUM is not supported.*dqcluster_backup"):
            conn.execute(statement.format(path=target))
        # Inside a transaction too, with the same words (SQLite would only say it is in one).
        conn.execute("BEGIN")
        with pytest.raises(dbapi.OperationalError, match="VACUUM is not supported"):
            conn.execute(statement.format(path=target))
        conn.execute("ROLLBACK")
    finally:
        conn.close()
    assert not target.exists()
    assert_still_serves(node)


def test_explain_vacuum_only_describes_it(node, tmp_path):
    target = tmp_path / "explained.db"
    conn = client(node)
    try:
        assert conn.execute(f"EXPLAIN VACUUM INTO '{target}'").fetchall()
    finally:
        conn.close()
    assert not target.exists()


@pytest.mark.parametrize("who", CLIENTS)
@pytest.mark.parametrize("sql", [
    "SELECT hex(fts3_tokenizer('simple'))",  # the address of a module inside the node process
    "SELECT FTS3_Tokenizer('evil', x'4141414141414141')",  # a tokenizer at an address the caller chose
])
def test_fts3_tokenizer_is_refused_in_reads(node, who, sql):
    conn = CLIENTS[who](node)
    try:
        with pytest.raises(dbapi.OperationalError, match=r"fts3_tokenizer\(\) reads and sets code addresses"):
            conn.execute(sql)
    finally:
        conn.close()
    assert_still_serves(node)


@pytest.fixture
def own_table(node):
    """A table of the test's own (attacks that got through must not fail the others' checks)."""
    name = f"own_{uuid.uuid4().hex[:8]}"
    conn = client(node)
    conn.execute(f"CREATE TABLE {name} (v)")
    conn.close()
    return name


def row_count(node, table):
    conn = client(node)
    try:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        conn.close()


def test_fts3_tokenizer_is_refused_in_writes_and_nothing_is_written(node, own_table):
    conn = client(node)
    try:
        with pytest.raises(dbapi.OperationalError, match=r"fts3_tokenizer\(\) reads and sets code addresses"):
            conn.execute(f"INSERT INTO {own_table} SELECT hex(fts3_tokenizer('porter'))")
    finally:
        conn.close()
    assert row_count(node, own_table) == 0


@pytest.mark.parametrize("statement", [
    "INSERT INTO _dqcluster_applied_entries VALUES (1000000000, 'x')",  # every later entry skipped at a restart
    "UPDATE _dqcluster_applied_entries SET raft_index = raft_index + 1000000",
    "DELETE FROM _dqcluster_applied_entries",  # an unknown commit outcome then read as "not applied"
    "DROP TABLE _dqcluster_applied_entries",
    "ALTER TABLE _dqcluster_applied_entries RENAME TO mine",
    "CREATE INDEX mine ON _dqcluster_applied_entries (entry_id)",
    "CREATE TRIGGER mine AFTER INSERT ON _DQCLUSTER_APPLIED_ENTRIES BEGIN DELETE FROM {own}; END",
    "CREATE TABLE _dqcluster_mine (v)",
    ["BEGIN", "INSERT INTO {own} SELECT raft_index FROM _dqcluster_applied_entries",  # reading it is fine
     "UPDATE _dqcluster_applied_entries SET entry_id = ''"],
])
def test_the_stores_bookkeeping_tables_can_be_read_but_not_changed(node, own_table, statement):
    """Each database's applied index and entry ids live in its own file, in tables a client could
    write: one INSERT made the node skip every later write after its next start (acknowledged, lost)."""
    conn = client(node)
    applied = conn.execute("SELECT max(raft_index), count(*) FROM _dqcluster_applied_entries").fetchone()
    try:
        with pytest.raises(dbapi.OperationalError, match=r"is the store's own bookkeeping \(the tables named "
                                                         r"_dqcluster_\*\): clients may read it, not change it"):
            for part in [statement] if isinstance(statement, str) else statement:
                conn.execute(part.format(own=own_table))
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        assert conn.execute("SELECT max(raft_index) >= ?, count(*) > 0 FROM _dqcluster_applied_entries",
                            (applied[0],)).fetchone() == (1, 1)
    finally:
        conn.close()
    assert_still_serves(node)


def test_a_trigger_that_would_change_the_bookkeeping_refuses_the_writes_that_fire_it(node, own_table):
    conn = client(node)
    try:
        conn.execute(f"CREATE TRIGGER {own_table}_t AFTER INSERT ON {own_table} "
                     "BEGIN DELETE FROM _dqcluster_applied_entries; END")  # its body runs only when fired
        with pytest.raises(dbapi.OperationalError, match="is the store's own bookkeeping"):
            conn.execute(f"INSERT INTO {own_table} VALUES (1)")
    finally:
        conn.close()
    assert row_count(node, own_table) == 0
    assert_still_serves(node)


def test_load_extension_is_refused_even_in_a_read(node):
    conn = client(node)
    try:
        with pytest.raises(dbapi.OperationalError, match=r"load_extension\(\) loads code into the node process"):
            conn.execute("SELECT load_extension('/nonexistent/evil.so')")
    finally:
        conn.close()


def test_a_statement_wrongly_taken_for_a_read_cannot_change_the_nodes_file(node, own_table, monkeypatch):
    """Reads run on connections that cannot write (query_only): a classifier mistake fails loudly
    instead of changing one replica's file outside the log."""
    from django_dqcluster.store.classify import Info

    conn = client(node)
    try:
        monkeypatch.setattr(node.leader_state, "classifier", lambda conn, sql, params, scope="": Info())
        with pytest.raises(dbapi.OperationalError, match="attempt to write a readonly database"):
            conn.execute(f"INSERT INTO {own_table} VALUES ('written outside the log')")
        monkeypatch.undo()
    finally:
        conn.close()
    assert row_count(node, own_table) == 0
    assert_still_serves(node)


@pytest.mark.timeout(60)  # each takes microseconds; the old patterns took minutes to hours
@pytest.mark.parametrize("sql, answer", [
    (" " * 64 + "SELECT 1", [(1,)]),  # a classifier pattern backtracked exponentially here
    ("\n" * 40 + "-- why not\n" + " " * 40 + "SELECT 2", [(2,)]),
    (" " * 48 + "EXPLAIN SELECT 3", None),
])
def test_a_statement_after_a_long_run_of_spaces_is_answered_at_once(node, sql, answer):
    """Classifying a statement must not hold the node's interpreter: while it did, the Raft
    thread sent no heartbeats either (elections in Django's migrations tests)."""
    conn = client(node)
    try:
        rows = conn.execute(sql).fetchall()
        assert answer is None or rows == answer
    finally:
        conn.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("statement", ["BEGIN", "COMMIT", "ROLLBACK"])
def test_transaction_control_padded_with_spaces_is_told_apart_in_linear_time(statement):
    from django_dqcluster.store.statements import transaction_control

    assert transaction_control(statement + " " * 200_000 + "x") is None  # quadratic: about ten minutes
    assert transaction_control(statement + " " * 200_000 + ";  ") is not None


@pytest.mark.timeout(60)
def test_a_session_pragma_padded_with_spaces_is_read_in_linear_time():
    from django_dqcluster.store.classify import session_pragma

    padding = " " * 200_000
    assert session_pragma("PRAGMA foreign_keys = on" + padding + "x") is None  # polynomial: minutes
    assert session_pragma("PRAGMA foreign_keys (" + padding + "x") is None
    assert session_pragma("PRAGMA foreign_keys = off" + padding + ";" + padding) == ("foreign_keys", 0)
    # The forms a session pragma takes, as before.
    assert session_pragma("PRAGMA foreign_keys") == ("foreign_keys", None)
    assert session_pragma("pragma main.foreign_keys(0) ;") == ("foreign_keys", 0)
    assert session_pragma('PRAGMA legacy_alter_table = "true"') == ("legacy_alter_table", 1)
    assert session_pragma("PRAGMA foreign_keys = maybe") is None
    assert session_pragma("PRAGMA foreign_keys_list") is None


# -- hostile frames before the handshake ----------------------------------------------------------


def test_garbage_instead_of_a_handshake_is_refused_and_the_node_keeps_serving(node):
    sock, _ = raw_socket(node)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n" + os.urandom(64))
    assert_refused(frames_until_closed(sock))
    assert_still_serves(node)


def test_a_frame_header_announcing_2_gb_is_refused_before_reading_it(node):
    for authenticated in (False, True):
        sock = authenticated_socket(node) if authenticated else raw_socket(node)[0]
        sock.sendall(struct.pack(">I", 2 * 1024 ** 3))
        assert_refused(frames_until_closed(sock))
    assert_still_serves(node)


def test_a_truncated_frame_is_refused(node):
    for authenticated in (False, True):
        sock = authenticated_socket(node) if authenticated else raw_socket(node)[0]
        body = msgpack.packb({"id": 1, "op": "exec", "sql": "CREATE TABLE truncated (a)"})
        sock.sendall(struct.pack(">I", len(body)) + body[: len(body) // 2])
        sock.shutdown(socket.SHUT_WR)
        assert_refused(frames_until_closed(sock))
    assert "truncated" not in tables(node)
    assert_still_serves(node)


def test_an_undecodable_handshake_frame_is_refused(node):
    sock, _ = raw_socket(node)
    sock.sendall(struct.pack(">I", 5) + b"\xc1\xc1\xc1\xc1\xc1")  # 0xc1 is never valid msgpack
    assert_refused(frames_until_closed(sock))
    assert_still_serves(node)


# -- hostile frames after a valid handshake -------------------------------------------------------


@pytest.mark.parametrize("body", [
    msgpack.packb([1, 2, 3]),
    msgpack.packb("exec"),
    msgpack.packb(42),
    b"\xc1\xc1\xc1",
    b"\x81",  # a map announcing one pair, then nothing
], ids=["list", "string", "integer", "undecodable", "incomplete-map"])
def test_a_non_map_frame_after_the_handshake_is_refused(node, body):
    sock = authenticated_socket(node)
    sock.sendall(struct.pack(">I", len(body)) + body)
    assert_refused(frames_until_closed(sock))
    assert_still_serves(node)


def test_a_frame_over_max_frame_after_the_handshake_is_refused_unread(node):
    victim = f"oversized_{uuid.uuid4().hex[:8]}"
    sock = authenticated_socket(node)
    request = wire.pack({"id": 1, "op": "exec", "sql": f"CREATE TABLE {victim} (a)", "pad": "x" * (2 * MAX_FRAME)})
    assert len(request) > MAX_FRAME
    try:
        sock.sendall(request)
    except OSError:
        pass  # the node may close before it has all of it
    frames = frames_until_closed(sock)
    assert_refused(frames)
    assert any("exceeds the limit" in frame.get("message", "") for frame in frames) or not frames
    assert victim not in tables(node)
    assert_still_serves(node)


def test_a_frame_just_under_max_frame_is_served(node):
    sock = authenticated_socket(node)
    request = {"id": 7, "op": "exec", "sql": "SELECT length(?)", "params": ["x" * (MAX_FRAME - 200)]}
    assert len(wire.pack(request)) <= MAX_FRAME
    wire.send_frame(sock, request)
    response = wire.recv_frame(sock)
    sock.close()
    assert response["id"] == 7 and response["ok"] is True
    assert response["rows"] == [[MAX_FRAME - 200]]


def test_an_unknown_operation_is_an_error_response_and_the_session_continues(node):
    sock = authenticated_socket(node)
    wire.send_frame(sock, {"id": 1, "op": "__import__('os').system"})
    response = wire.recv_frame(sock)
    assert response["id"] == 1 and response["ok"] is False
    assert response["error"]["kind"] == "ProgrammingError"
    wire.send_frame(sock, {"id": 2, "op": "exec", "sql": "SELECT 3"})
    assert wire.recv_frame(sock)["rows"] == [[3]]
    sock.close()


def test_an_oversized_write_through_the_driver_is_refused_as_not_applied(node):
    victim = f"big_{uuid.uuid4().hex[:8]}"
    conn = client(node)
    conn.execute(f"CREATE TABLE {victim} (v)")
    with pytest.raises(dbapi.Error, match="exceeds the limit") as info:
        conn.execute(f"INSERT INTO {victim} VALUES (?)", ("x" * (2 * MAX_FRAME),))
    assert not info.value.unknown_outcome
    conn.close()
    check = client(node)
    assert check.execute(f"SELECT count(*) FROM {victim}").fetchone() == (0,)
    check.close()


def test_an_oversized_read_through_the_driver_fails_at_once(node):
    conn = client(node, timeout=3)
    started = time.monotonic()
    with pytest.raises(dbapi.Error, match="exceeds the limit") as info:
        conn.execute("SELECT length(?)", ("x" * (2 * MAX_FRAME),))
    elapsed = time.monotonic() - started
    conn.close()
    assert not info.value.retryable
    assert "cannot reach" not in str(info.value)
    assert elapsed < 1.5


def test_an_answer_over_the_clients_max_frame_fails_at_once_saying_so_and_the_connection_goes_on(node):
    conn = client(node, timeout=3, max_frame=2048)
    started = time.monotonic()
    with pytest.raises(dbapi.OperationalError, match=r"answer is too large .* exceeds the limit of 2048 bytes"
                                                      r" \(max_frame\); fetch fewer rows") as info:
        conn.execute("SELECT printf('%.3000c', 'x')")
    assert time.monotonic() - started < 1.5  # not retried as if the node were unreachable
    assert not info.value.retryable and not info.value.unknown_outcome
    assert conn.execute("SELECT 1").fetchone() == (1,)  # on a new session
    conn.close()


def test_a_write_whose_answer_is_over_max_frame_is_reported_as_run_not_as_a_lost_connection(node):
    conn = client(node, timeout=3, max_frame=2048)
    conn.execute("CREATE TABLE big_answer (id INTEGER PRIMARY KEY, v TEXT)")
    with pytest.raises(dbapi.OperationalError, match="answer is too large .* the statement ran") as info:
        conn.execute("INSERT INTO big_answer (v) VALUES (printf('%.3000c', 'x')) RETURNING v")
    assert info.value.unknown_outcome and "lost the connection" not in str(info.value)
    assert conn.execute("SELECT count(*) FROM big_answer").fetchone() == (1,)
    conn.close()


# -- the Raft port --------------------------------------------------------------------------------


def pysyncobj_frame(message):
    """A message framed the way an unauthenticated (password-less) pysyncobj peer sends it."""
    data = zlib.compress(pickle.dumps(message), 3)
    return struct.pack("i", len(data)) + data


def test_the_raft_port_does_not_accept_an_unauthenticated_pysyncobj_peer(cluster):
    leader = cluster.leader()
    conn = leader.connect()
    conn.execute("CREATE TABLE raft_sentinel (v)")
    conn.execute("INSERT INTO raft_sentinel VALUES ('intact')")
    conn.close()
    for node in cluster.nodes:
        # pysyncobj's admin "status" utility command: a password-less node answers it.
        sock = socket.create_connection(wire.parse_address(node.raft), timeout=5)
        sock.sendall(pysyncobj_frame(["status"]))
        sock.settimeout(3)
        try:
            reply = sock.recv(4096)
        except ConnectionResetError:
            reply = b""
        except socket.timeout:
            reply = b""
        finally:
            sock.close()
        assert reply == b"", f"node{node.index}'s Raft port answered an unauthenticated peer"
    assert all(node.alive for node in cluster.nodes)
    writer = cluster.leader().connect()
    writer.execute("INSERT INTO raft_sentinel VALUES ('after')")
    writer.close()
    rows = rows_on_every_node(cluster, "SELECT v FROM raft_sentinel ORDER BY rowid")
    assert rows == {node.index: [("intact",), ("after",)] for node in cluster.nodes}


def sealed_pysyncobj_frame(message, secret):
    """A message framed and sealed the way a member holding ``secret`` sends it."""
    data = RaftCipher(secret).encrypt_at_time(zlib.compress(pickle.dumps(message), 3), 0)
    return struct.pack("i", len(data)) + data


def first_reply(address, frame):
    sock = socket.create_connection(wire.parse_address(address), timeout=5)
    try:
        sock.sendall(frame)
        sock.settimeout(3)
        try:
            return sock.recv(4096)
        except (ConnectionResetError, socket.timeout):
            return b""
    finally:
        sock.close()


def test_the_raft_port_answers_only_peers_sealing_with_the_cluster_secret(cluster):
    # A new Raft connection opens with a random key; a member answers with its own.
    opening = os.urandom(32)
    for node in cluster.nodes:
        assert first_reply(node.raft, sealed_pysyncobj_frame(opening, "not-the-cluster-secret")) == b"", \
            f"node{node.index} answered a peer sealing with another secret"
        assert first_reply(node.raft, sealed_pysyncobj_frame(opening, cluster.secret)) != b"", \
            f"node{node.index} did not answer a peer holding the cluster secret"
    assert all(node.alive for node in cluster.nodes)


def test_a_node_given_another_secret_stays_out_and_says_so_once_not_at_every_redial(tmp_path):
    from django_dqcluster.store.local_cluster import LocalCluster

    cluster = LocalCluster(str(tmp_path / "wrong"), 3)
    # The smallest address is dialed by both others, which redial it every heartbeat.
    outsider = min(cluster.nodes, key=lambda node: node.raft)
    members = [node for node in cluster.nodes if node is not outsider]
    wrong_secret = tmp_path / "wrong.secret"
    wrong_secret.write_text("not-the-cluster-secret-" + "x" * 20)
    try:
        started = time.monotonic()
        for node in cluster.nodes:
            extra = ["--secret-file", str(wrong_secret)] if node is outsider else []
            node.start(peers=cluster.peers_of(node), extra_args=extra)
        assert cluster.wait_for_leader() in members
        time.sleep(3.0)  # some 30 redials of the outsider by each member
        warnings = [line for line in outsider.log().splitlines() if "unreadable message" in line]
        # Once, then once per 10 s with a count of the others (a slow start can take 10 s).
        assert 1 <= len(warnings) <= 1 + (time.monotonic() - started) // 10, warnings
        assert "does every node have the same cluster secret?" in warnings[0]
        assert all(" more like it in the last " in line for line in warnings[1:]), warnings
        assert outsider.alive
        # The members agree on their term (read one after the other, they may see an election in between).
        cluster.wait_for(lambda: len({m.status()["term"] for m in members}) == 1, 10, "the members to agree on a term")
    finally:
        cluster.kill()
