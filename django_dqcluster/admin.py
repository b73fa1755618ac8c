"""The cluster's members in the admin: a read-only list (nothing can be added or edited).

The rows belong to the version gate; editing a version by hand is how clusters got
stuck for good (canonical/lxd#3465). A dead member is removed with
``manage.py ensure_cluster_schema --remove-member ADDRESS``, which refuses to remove
the host it runs on. On our ENGINE the list also shows each member's live role in
the store and how far it has applied the log, and above it what the operator of
this host should know about its node (a health problem, a secret rotation under
way, a secret file it cannot use), as ``cluster_status`` does.
"""

from django.contrib import admin, messages
from django.db import DatabaseError
from django.shortcuts import redirect

from . import gate, health
from .member_status import member_role, store_status
from .models import ClusterNode


def node_notices(status, error):
    """[(messages level, text)] about this host's node, from its status (or why there is none)."""
    from .management.commands.cluster_status import describe_entry_formats, describe_fallbacks, describe_secret_file

    if error:
        return [(messages.WARNING, f"Store status unavailable: {error}")]
    if status is None:
        return []  # not a store (SQLite, PostgreSQL)
    notices = []
    healthy, report = health.judge(status)
    if not healthy:
        notices.append((messages.WARNING, f"This host's node is not fit to serve: {report['problem']}."))
    if status.get("secret_fallbacks"):
        notices.append((messages.INFO, describe_fallbacks(status["secret_fallbacks"])))
    problem = describe_secret_file(status.get("secret_file"))
    if problem:
        notices.append((messages.WARNING, problem))
    formats = describe_entry_formats(status)
    if formats:
        notices.append((messages.INFO, formats))  # a rolling upgrade of django-dqcluster under way
    return notices


def _store_status_once(request, db):
    """The store's status for this page: asked once, though the list and the notices both need it."""
    cache = request.__dict__.setdefault("_dqcluster_store_status", {})
    if db not in cache:
        cache[db] = store_status(db)
    return cache[db]


@admin.register(ClusterNode)
class ClusterNodeAdmin(admin.ModelAdmin):
    list_display = ("address", "schema", "api_extensions", "heartbeat")  # + state, below
    list_display_links = None
    ordering = ("id",)
    search_fields = ("address", "name")
    actions = None
    readonly_fields = ("name", "description", "address", "schema", "api_extensions", "heartbeat", "pending")

    def get_list_display(self, request):
        # Each row's state depends on every other row, and its role on the store's
        # status: read both once per page, into closures (not on self: the
        # ModelAdmin is shared between threads).
        db = self.get_queryset(request).db
        members = list(ClusterNode.objects.using(db))

        @admin.display(description="gate state")
        def state(obj):
            return obj.gate_state(members)

        columns = ("address", "schema", "api_extensions", "heartbeat", state)
        status, _ = _store_status_once(request, db)
        if status is None:
            return columns  # not a store (SQLite, PostgreSQL): the table is all there is
        our_address, now = gate.node_address(db), gate.database_now(db)

        def live(obj):
            return member_role(status, obj.address, obj.heartbeat, now, obj.address == our_address)

        @admin.display(description="role")
        def role(obj):
            return live(obj)[0]

        @admin.display(description="applied index (lag)")
        def applied(obj):
            _, index, lag = live(obj)
            if index is None:
                return "-"
            return f"{index} ({lag} behind)" if lag else str(index)

        return columns + (role, applied)

    def changelist_view(self, request, extra_context=None):
        db = self.get_queryset(request).db
        try:
            ClusterNode.objects.using(db).exists()
        except DatabaseError:
            # No cluster tables yet: say how to make them instead of a server error.
            self.message_user(
                request,
                f"Database {db!r} has no cluster tables yet: run `manage.py ensure_cluster_schema "
                f"--database {db}` (or migrate) on a host.",
                messages.WARNING,
            )
            return redirect("admin:index")
        for level, text in node_notices(*_store_status_once(request, db)):
            self.message_user(request, text, level)
        return super().changelist_view(request, extra_context)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
