"""Settings helpers: a ``dqcluster://`` database URL, and its django-environ scheme.

    DATABASES = {"default": parse_url(
        "dqcluster://127.0.0.1:7101,127.0.0.1:7111/app?secret_file=/etc/dq/secret&consistency=strong"
    )}

The hosts are client addresses of store nodes (this host's first); the path is
the database NAME inside the store; query parameters become OPTIONS
(``peers``, ``secret_file`` or ``token_file``, ``consistency``, ``durability``,
``timeout``, ``embedded``, ``data_dir``, ``bind``, ``client``). A unix socket is written
``dqcluster://%2Frun%2Fdq.sock/app`` or ``dqcluster:///app?address=unix:/run/dq.sock``.

django-environ only parses several hosts for the postgres family, so with
``env.db()`` give one host and put the rest in ``?peers=`` or ``?address=``;
:func:`register_environ_scheme` (called when ``django_dqcluster`` is
imported) makes ``env.db()`` map the scheme to this ENGINE, and the backend
accepts environ's shapes (HOST/PORT comma lists, ``peers`` as a string).
"""

from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

from .wire import parse_host_port

SCHEME = "dqcluster"
ENGINE = "django_dqcluster.backend"

# Query keys that are top-level DATABASES keys rather than OPTIONS (as in django-environ).
_TOP_LEVEL = {"CONN_MAX_AGE", "ATOMIC_REQUESTS", "AUTOCOMMIT", "CONN_HEALTH_CHECKS", "TIME_ZONE"}
_LIST_OPTIONS = {"peers", "address"}


def parse_url(url):
    """Turn a ``dqcluster://`` URL into a DATABASES entry (ImproperlyConfigured if malformed)."""
    parts = urlsplit(url)
    if parts.scheme != SCHEME:
        raise ImproperlyConfigured(f"database URL {url!r}: the scheme must be {SCHEME}://")
    name = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
    if not name:
        raise ImproperlyConfigured(f"database URL {url!r}: the path must name the database (dqcluster://HOST:PORT/NAME)")
    # netloc may hold several host:port pairs; urlsplit's .port would choke on them.
    netloc = parts.netloc.rpartition("@")[2]
    addresses = []
    for item in filter(None, (piece.strip() for piece in netloc.split(","))):
        item = unquote(item)
        if item.startswith("/"):
            addresses.append("unix:" + item)
            continue
        try:
            parse_host_port(item)
        except ValueError as exc:
            raise ImproperlyConfigured(f"database URL {url!r}: {exc}") from None
        addresses.append(item)

    entry = {"ENGINE": ENGINE, "NAME": name, "HOST": "", "PORT": "", "USER": "", "PASSWORD": "", "OPTIONS": {}}
    options = entry["OPTIONS"]
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key.upper() in _TOP_LEVEL:
            entry[key.upper()] = int(value) if value.isdigit() else value
        elif key in _LIST_OPTIONS:
            options.setdefault(key, []).extend(v.strip() for v in value.split(",") if v.strip())
        elif key == "timeout":
            try:
                options[key] = float(value)
            except ValueError:
                raise ImproperlyConfigured(f"database URL {url!r}: timeout must be a number of seconds") from None
        elif key in ("embedded", "allow_remote"):
            options[key] = value.lower() in ("1", "true", "yes", "on")
        else:
            options[key] = value
    if addresses:
        options["address"] = addresses + [a for a in options.get("address", []) if a not in addresses]
    # Validate now, so a bad URL fails where it is read.
    from .backend.options import parse

    parse("URL", entry)
    return entry


def register_environ_scheme():
    """Let django-environ's ``env.db()`` map ``dqcluster://`` to this ENGINE.

    Done when ``django_dqcluster`` is imported; call it again if environ's
    schemes were reset. Returns False when django-environ is not installed.
    """
    try:
        import environ
    except ImportError:
        return False
    environ.Env.DB_SCHEMES.setdefault(SCHEME, ENGINE)
    return True
