"""An interactive SQL shell against the store (what ``manage.py dbshell`` runs).

    python -m django_dqcluster.backend.shell --address 127.0.0.1:7101 --secret-file S --database app
    python -m django_dqcluster.backend.shell -c "SELECT count(*) FROM auth_user" ...

``manage.py dbshell`` passes the DATABASES entry in the environment
(``DQCLUSTER_SHELL_SETTINGS``) so the secret never appears on a command line.
Statements end with ``;`` (like the sqlite3 shell). Dot commands: ``.tables``,
``.schema [TABLE]``, ``.databases``, ``.status``, ``.help``, ``.quit``.
"""

import argparse
import json
import os
import sys

from .. import dbapi
from ..store.statements import take_statements

ENV_VAR = "DQCLUSTER_SHELL_SETTINGS"

HELP = """\
.tables            list tables
.schema [TABLE]    show CREATE statements
.databases         list the store's databases
.status            this node's Raft status
.help              this text
.quit              leave (also Ctrl-D)
SQL statements end with ';'. Transactions (BEGIN ... COMMIT) work as usual."""


def settings_to_env(settings_dict):
    keys = ("NAME", "HOST", "PORT", "OPTIONS")
    payload = {key: settings_dict.get(key) for key in keys}
    return {ENV_VAR: json.dumps(payload, default=str)}


def connect_from_settings(settings_dict, alias="dbshell"):
    from . import options as backend_options

    opts = backend_options.parse(alias, settings_dict)
    kwargs = {"database": opts.name, "consistency": opts.consistency, "timeout": opts.timeout,
              "isolation_level": None}
    if opts.embedded:
        from .embedded import connect_params

        return dbapi.connect(**kwargs, **connect_params(opts))
    return dbapi.connect(opts.addresses, secret=opts.secret, token=opts.token, **kwargs)


def format_rows(description, rows):
    headers = [column[0] for column in description]
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(headers, widths)),
             "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def _cell(value):
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return "x'" + value.hex() + "'"
    return str(value)


class Shell:
    def __init__(self, conn, out=sys.stdout, err=sys.stderr):
        self.conn = conn
        self.out = out
        self.err = err

    def run_sql(self, sql):
        try:
            cursor = self.conn.cursor()
            cursor.execute(sql)
            if cursor.description:
                rows = cursor.fetchall()
                print(format_rows(cursor.description, rows), file=self.out)
                print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})", file=self.out)
            elif cursor.rowcount is not None and cursor.rowcount >= 0:
                print(f"({cursor.rowcount} row{'s' if cursor.rowcount != 1 else ''} affected)", file=self.out)
            return True
        except dbapi.Error as exc:
            print(f"Error: {exc}", file=self.err)
            return False

    def report_interruption(self):
        """After Ctrl-C stopped a statement (the statements after it on the line do not run)."""
        message = ("Interrupted: the node cancels a read it was running; a write it had received "
                   "may still commit.")
        if self.conn.in_transaction:
            message += " The open transaction was rolled back: enter ROLLBACK; to go on."
        print(message, file=self.err)

    def run_script(self, text):
        """Run every statement in ``text`` in order; False if any failed (the rest still run)."""
        statements, rest = take_statements(text)
        if not _blank(rest):
            statements.append(rest.strip())
        ok = True
        for statement in statements:
            ok = self.run_sql(statement) and ok
        return ok

    def run_dot(self, line):
        command, _, argument = line.strip().partition(" ")
        argument = argument.strip()
        if command in (".quit", ".exit"):
            return False
        if command == ".help":
            print(HELP, file=self.out)
        elif command == ".tables":
            self.run_sql(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                "AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '\\_dqcluster\\_%' ESCAPE '\\' ORDER BY name"
            )
        elif command == ".schema":
            where = "AND tbl_name = " + _quote(argument) if argument else ""
            self.run_sql(
                "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE '\\_dqcluster\\_%' "
                f"ESCAPE '\\' {where} ORDER BY tbl_name, type DESC, name"
            )
        elif command == ".databases":
            for name in self.conn.list_databases():
                print(name, file=self.out)
        elif command == ".status":
            print(json.dumps(self.conn.status(), indent=2, default=str), file=self.out)
        else:
            print(f"Error: unknown command {command!r}; try .help", file=self.err)
        return True

    def interact(self, stdin=sys.stdin):
        interactive = stdin.isatty()
        if interactive:
            print(f"dqcluster shell: database {self.conn.database!r} on {self.conn.node_address}. "
                  "Enter .help for help.", file=self.out)
        buffer = ""
        ok = True
        while True:
            if interactive:
                try:
                    line = input("dqcluster> " if not buffer else "     ...> ")
                except EOFError:
                    print(file=self.out)
                    break
                except KeyboardInterrupt:
                    print(file=self.out)
                    buffer = ""
                    continue
            else:
                line = stdin.readline()
                if not line:
                    break
                line = line.rstrip("\n")
            if not buffer and line.strip().startswith("."):
                if not self.run_dot(line):
                    break
                continue
            buffer += line + "\n"
            statements, buffer = take_statements(buffer)
            try:
                for statement in statements:
                    ok = self.run_sql(statement) and ok
            except KeyboardInterrupt:
                if not interactive:
                    raise
                ok = False
                self.report_interruption()
        if not _blank(buffer):
            ok = self.run_sql(buffer.strip()) and ok
        return ok


def _blank(text):
    """Only whitespace and SQL comments (what the sqlite3 shell ignores at the end of input)."""
    text = text.strip()
    while text:
        if text.startswith("--"):
            text = text.partition("\n")[2].strip()
        elif text.startswith("/*") and "*/" in text:
            text = text.split("*/", 1)[1].strip()
        else:
            return False
    return True


def _quote(text):
    return "'" + text.replace("'", "''") + "'"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m django_dqcluster.backend.shell", description=__doc__.splitlines()[0])
    parser.add_argument("--address", help="client address(es) of a node, comma-separated")
    parser.add_argument("--secret-file", help="file holding the cluster secret")
    parser.add_argument("--database", default=None, help="database name inside the store")
    parser.add_argument("--consistency", default=None, choices=("strong", "weak", "none"))
    parser.add_argument("-c", "--command", help="run this SQL (or dot command) and exit")
    args = parser.parse_args(argv)

    settings_dict = json.loads(os.environ.get(ENV_VAR) or "{}")
    options = dict(settings_dict.get("OPTIONS") or {})
    if args.address:
        options["address"] = args.address
        settings_dict["HOST"] = settings_dict["PORT"] = ""
    if args.secret_file:
        for key in ("secret", "token", "token_file"):
            options.pop(key, None)
        options["secret_file"] = args.secret_file
    if args.consistency:
        options["consistency"] = args.consistency
    if args.database:
        settings_dict["NAME"] = args.database
    settings_dict.setdefault("NAME", "default")
    settings_dict["OPTIONS"] = options
    from django.core.exceptions import ImproperlyConfigured

    try:
        conn = connect_from_settings(settings_dict)
    except (ImproperlyConfigured, dbapi.Error) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    shell = Shell(conn)
    try:
        if args.command:
            command = args.command.strip()
            ok = shell.run_dot(command) if command.startswith(".") else shell.run_script(command)
        else:
            ok = shell.interact()
    finally:
        conn.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
