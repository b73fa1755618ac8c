"""DATABASES validation and the dqcluster:// URL (no Django settings needed)."""

import pytest
from django.core.exceptions import ImproperlyConfigured

import django_dqcluster  # noqa: F401  (registers the environ scheme)
from django_dqcluster.backend.options import parse
from django_dqcluster.conf import parse_url
from django_dqcluster.store.regexp_time import DEFAULT_MAX_REGEXP_SECONDS
from django_dqcluster.store.statement_steps import DEFAULT_MAX_STATEMENT_STEPS


@pytest.fixture
def secret_file(tmp_path):
    path = tmp_path / "secret"
    path.write_text("s3cret\n")
    return str(path)


def entry(secret_file, **options):
    return {"NAME": "app", "OPTIONS": {"address": "127.0.0.1:7101", "secret_file": secret_file, **options}}


def test_valid_client_entry(secret_file):
    opts = parse("default", entry(secret_file, consistency="none", timeout="5"))
    assert opts.addresses == ["127.0.0.1:7101"] and opts.secret == "s3cret"
    assert opts.consistency == "none" and opts.timeout == 5.0
    assert opts.local_reads is True  # the default
    assert parse("default", entry(secret_file, local_reads="off")).local_reads is False


def test_the_idle_transaction_timeout_reaches_the_node_that_the_entry_runs(tmp_path):
    settings_dict = {"NAME": "app", "OPTIONS": {"embedded": True, "data_dir": str(tmp_path), "bind": "127.0.0.1:7001",
                                                "idle_transaction_timeout": "60"}}  # a URL's string
    assert parse("default", settings_dict).node_config().idle_transaction_timeout == 60.0
    del settings_dict["OPTIONS"]["idle_transaction_timeout"]
    assert parse("default", settings_dict).node_config().idle_transaction_timeout is None  # never, by default


@pytest.mark.parametrize("key, given, expected, default", [
    ("max_statement_steps", "5000000", 5_000_000, DEFAULT_MAX_STATEMENT_STEPS),
    ("max_regexp_seconds", "2.5", 2.5, DEFAULT_MAX_REGEXP_SECONDS),
])
def test_a_statement_limit_reaches_the_node_that_runs_the_statement_first(tmp_path, key, given, expected, default):
    settings_dict = {"NAME": "app", "OPTIONS": {"embedded": True, "data_dir": str(tmp_path), "bind": "127.0.0.1:7001",
                                                key: given}}  # a URL's string
    assert getattr(parse("default", settings_dict).node_config(), key) == expected
    settings_dict["OPTIONS"][key] = 0
    assert getattr(parse("default", settings_dict).node_config(), key) == 0  # no limit
    del settings_dict["OPTIONS"][key]
    assert getattr(parse("default", settings_dict).node_config(), key) == default


@pytest.mark.parametrize("key, default", [
    ("max_log_mb", "DEFAULT_MAX_LOG_MB"),
    ("max_transaction_mb", "DEFAULT_MAX_TRANSACTION_MB"),
])
def test_the_mib_limits_reach_the_node(tmp_path, key, default):
    from django_dqcluster.store import config

    settings_dict = {"NAME": "app", "OPTIONS": {"embedded": True, "data_dir": str(tmp_path), "bind": "127.0.0.1:7001",
                                                key: "64"}}  # a URL's string
    assert getattr(parse("default", settings_dict).node_config(), key) == 64
    del settings_dict["OPTIONS"][key]
    assert getattr(parse("default", settings_dict).node_config(), key) == getattr(config, default)


@pytest.mark.parametrize("secret_option", ["secret_file", "secret"])
def test_while_the_secret_rotates_the_node_gets_the_fallbacks_and_the_client_the_secret(tmp_path, secret_option):
    path = tmp_path / "secret"
    path.write_text("the-new-secret\nthe-old-secret\n")
    given = str(path) if secret_option == "secret_file" else ["the-new-secret", "the-old-secret"]
    opts = parse("default", {"NAME": "app", "OPTIONS": {"embedded": True, "data_dir": str(tmp_path / "node"),
                                                        "bind": "127.0.0.1:7001", secret_option: given}})
    assert (opts.secret, opts.secret_fallbacks) == ("the-new-secret", ("the-old-secret",))
    config = opts.node_config()
    assert (config.secret, config.secret_fallbacks) == ("the-new-secret", ("the-old-secret",))
    # A node started from the file follows its changes (tests/store/test_secret_file.py).
    assert config.secret_file == (str(path) if secret_option == "secret_file" else None)


@pytest.mark.parametrize("key", ["secret_file", "token_file"])
def test_a_client_given_a_file_hands_it_to_the_driver_which_reads_it_again_to_reconnect(tmp_path, key):
    from django_dqcluster.backend.base import DatabaseWrapper

    path = tmp_path / key
    path.write_text("the-secret\n" if key == "secret_file" else TOKEN + "\n")
    wrapper = DatabaseWrapper({"NAME": "app", "OPTIONS": {"address": "127.0.0.1:7101", key: str(path)}}, "default")
    params = wrapper.get_connection_params()
    assert params[key] == str(path) and "secret" not in params and "token" not in params


@pytest.mark.parametrize("change, key", [
    ({"NAME": ""}, "NAME"),
    ({"NAME": "../etc/passwd"}, "NAME"),
    ({"OPTIONS": {"secret": "x"}}, "address"),
    ({"OPTIONS": {"address": "127.0.0.1:7101"}}, "secret_file"),
    ({"OPTIONS": {"address": "nohost", "secret": "x"}}, "address"),
    ({"OPTIONS": {"address": "127.0.0.1:99999", "secret": "x"}}, "address"),
    ({"OPTIONS": {"embedded": True, "data_dir": "/tmp/x", "bind": "127.0.0.1:0"}}, "bind"),
    ({"OPTIONS": {"address": "127.0.0.1:1", "secret": "x", "consistency": "eventual"}}, "consistency"),
    ({"OPTIONS": {"address": "127.0.0.1:1", "secret": "x", "durability": "never"}}, "durability"),
    ({"OPTIONS": {"address": "127.0.0.1:1", "secret": "x", "timeout": "soon"}}, "timeout"),
    ({"OPTIONS": {"address": "127.0.0.1:1", "secret": "x", "timeout": 0}}, "timeout"),
    ({"OPTIONS": {"address": "127.0.0.1:1", "secret": "x", "idle_transaction_timeout": "soon"}},
     "idle_transaction_timeout"),
    ({"OPTIONS": {"address": "127.0.0.1:1", "secret": "x", "idle_transaction_timeout": 0}},
     "idle_transaction_timeout"),
    ({"OPTIONS": {"address": "127.0.0.1:1", "secret": "x", "idle_transaction_timeout": True}},
     "idle_transaction_timeout"),
    ({"OPTIONS": {"address": "127.0.0.1:1", "secret": "x", "max_statement_steps": "lots"}}, "max_statement_steps"),
    ({"OPTIONS": {"address": "127.0.0.1:1", "secret": "x", "max_statement_steps": -1}}, "max_statement_steps"),
    ({"OPTIONS": {"address": "127.0.0.1:1", "secret": "x", "max_statement_steps": 2.5}}, "max_statement_steps"),
    ({"OPTIONS": {"address": "127.0.0.1:1", "secret": "x", "max_regexp_seconds": "long"}}, "max_regexp_seconds"),
    ({"OPTIONS": {"address": "127.0.0.1:1", "secret": "x", "max_regexp_seconds": -1}}, "max_regexp_seconds"),
    ({"OPTIONS": {"address": "127.0.0.1:1", "secret": "x", "max_regexp_seconds": True}}, "max_regexp_seconds"),
    ({"OPTIONS": {"address": "127.0.0.1:1", "secret": "x", "max_log_mb": "a lot"}}, "max_log_mb"),
    ({"OPTIONS": {"address": "127.0.0.1:1", "secret": "x", "max_log_mb": 0}}, "max_log_mb"),
    ({"OPTIONS": {"address": "127.0.0.1:1", "secret": "x", "max_log_mb": 0.5}}, "max_log_mb"),
    ({"OPTIONS": {"address": "127.0.0.1:1", "secret": "x", "max_transaction_mb": "huge"}}, "max_transaction_mb"),
    ({"OPTIONS": {"address": "127.0.0.1:1", "secret": "x", "max_transaction_mb": 0}}, "max_transaction_mb"),
    ({"OPTIONS": {"address": "127.0.0.1:1", "secret": "x", "peers": "a,b"}}, "peers"),
    ({"OPTIONS": {"address": "127.0.0.1:1", "secret": "x", "bogus": 1}}, "bogus"),
    ({"OPTIONS": {"address": "127.0.0.1:1", "secret": "x", "secret_file": "/nonexistent"}}, "secret"),
    ({"OPTIONS": {"address": "127.0.0.1:1", "secret_file": "/nonexistent/secret"}}, "secret_file"),
    ({"OPTIONS": {"embedded": True, "bind": "127.0.0.1:7001"}}, "data_dir"),
    ({"OPTIONS": {"embedded": True, "data_dir": "/tmp/x"}}, "bind"),
    ({"OPTIONS": {"embedded": "maybe"}}, "embedded"),
    ({"OPTIONS": {"address": "127.0.0.1:1", "secret": "x", "local_reads": "sometimes"}}, "local_reads"),
    ({"OPTIONS": {"embedded": True, "data_dir": "/tmp/x", "bind": "127.0.0.1:7001", "peers": "127.0.0.1:7002"}}, "secret"),
    ({"OPTIONS": {"secret": "x"}, "HOST": "a,b", "PORT": "1,2,3"}, "PORT"),
    ({"OPTIONS": {"secret": "x"}, "HOST": "h"}, "PORT"),
    ({"OPTIONS": {"secret": "x"}, "HOST": "h", "PORT": "70000"}, "PORT"),
    ({"OPTIONS": {"address": "127.0.0.1:1", "secret": ["new", ""]}}, "secret"),
    ({"OPTIONS": {"address": "127.0.0.1:1", "secret": 7}}, "secret"),
])
def test_wrong_or_missing_keys_are_named(change, key):
    settings_dict = {"NAME": "app", "OPTIONS": {}, **change}
    with pytest.raises(ImproperlyConfigured) as raised:
        parse("default", settings_dict)
    assert f"[{key!r}]" in str(raised.value), str(raised.value)


def test_an_embedded_node_whose_default_client_port_cannot_exist_is_refused_naming_client(tmp_path):
    opts = parse("default", {"NAME": "app", "OPTIONS": {
        "embedded": True, "data_dir": str(tmp_path), "bind": "127.0.0.1:65535"}})
    with pytest.raises(ImproperlyConfigured, match=r"\['client'\] .*port 65536 is not in 1-65535"):
        opts.node_config()


def test_environ_shapes(secret_file):
    opts = parse("default", {"NAME": "app", "HOST": "10.0.0.1,10.0.0.2", "PORT": "7101,7102",
                             "OPTIONS": {"secret_file": secret_file, "peers": "127.0.0.1:7002, 127.0.0.1:7003"}})
    assert opts.addresses == ["10.0.0.1:7101", "10.0.0.2:7102"]
    assert opts.peers == ["127.0.0.1:7002", "127.0.0.1:7003"]
    opts = parse("default", {"NAME": "app", "HOST": "h1,h2", "PORT": 7101, "OPTIONS": {"secret": "x"}})
    assert opts.addresses == ["h1:7101", "h2:7101"]


def test_environ_db_url_config(secret_file):
    environ = pytest.importorskip("environ")
    config = environ.Env.db_url_config(
        f"dqcluster://127.0.0.1:7101/app?peers=127.0.0.1:7002,127.0.0.1:7003&secret_file={secret_file}"
        "&consistency=weak&timeout=5"
    )
    assert config["ENGINE"] == "django_dqcluster.backend"
    opts = parse("default", config)
    assert opts.addresses == ["127.0.0.1:7101"]
    assert opts.peers == ["127.0.0.1:7002", "127.0.0.1:7003"]
    assert (opts.consistency, opts.timeout, opts.secret) == ("weak", 5.0, "s3cret")


def test_parse_url_with_several_hosts(secret_file):
    config = parse_url(f"dqcluster://127.0.0.1:7101,127.0.0.1:7111/app?secret_file={secret_file}&CONN_MAX_AGE=60")
    assert config["ENGINE"] == "django_dqcluster.backend" and config["NAME"] == "app"
    assert config["OPTIONS"]["address"] == ["127.0.0.1:7101", "127.0.0.1:7111"]
    assert config["CONN_MAX_AGE"] == 60
    with pytest.raises(ImproperlyConfigured, match="consistency"):
        parse_url(f"dqcluster://127.0.0.1:7101/app?secret_file={secret_file}&consistency=maybe")
    with pytest.raises(ImproperlyConfigured, match="HOST:PORT"):
        parse_url("dqcluster://127.0.0.1/app")


# -- a client token instead of the cluster secret ------------------------------------------------

TOKEN = "a3" * 32  # the shape of wire.client_token's answer


def test_a_process_that_runs_no_node_can_hold_only_the_client_token(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    opts = parse("default", {"NAME": "app", "OPTIONS": {"address": "127.0.0.1:7101", "token_file": str(token_file)}})
    assert (opts.secret, opts.token) == (None, TOKEN)
    assert parse("default", {"NAME": "app", "OPTIONS": {"address": "127.0.0.1:7101", "token": TOKEN}}).token == TOKEN


@pytest.mark.parametrize("options, message", [
    ({"token": TOKEN, "secret": "x"}, r"\['secret'\] and 'token' are both set; give one of them"),
    ({"token_file": "/nonexistent/token"}, r"\['token_file'\] cannot be read \(/nonexistent/token: No such file"),
    ({"token": "s3cret"}, r"\['token'\] must hold a client token, the 64 hex digits .* \(not the cluster secret itself\)"),
    ({"token": TOKEN.upper()}, r"\['token'\] must hold a client token"),
])
def test_a_wrong_token_is_refused_naming_the_key(options, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        parse("default", {"NAME": "app", "OPTIONS": {"address": "127.0.0.1:7101", **options}})


def test_a_token_cannot_run_a_node(tmp_path):
    with pytest.raises(ImproperlyConfigured, match=r"\['token'\] only lets a process in as a client; with "
                                                   r"'embedded' this process runs the node"):
        parse("default", {"NAME": "app", "OPTIONS": {"embedded": True, "data_dir": str(tmp_path),
                                                     "bind": "127.0.0.1:7001", "token": TOKEN}})
    opts = parse("default", {"NAME": "app", "OPTIONS": {"address": "127.0.0.1:7102", "bind": "127.0.0.1:7101",
                                                        "data_dir": str(tmp_path), "token": TOKEN}})
    with pytest.raises(ImproperlyConfigured, match=r"\['token'\] only lets this process in as a client of a node; "
                                                   r"running one needs the cluster secret"):
        opts.node_config()  # what manage.py dqcluster_node asks for
