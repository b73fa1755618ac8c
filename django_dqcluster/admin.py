"""The cluster's members in the admin: a read-only list (nothing can be added or edited).

The rows belong to the version gate; editing a version by hand is how clusters got
stuck for good (canonical/lxd#3465). A dead member is removed with
``manage.py ensure_cluster_schema --remove-member ADDRESS``, which refuses to remove
the host it runs on.
"""

from django.contrib import admin, messages
from django.db import DatabaseError
from django.shortcuts import redirect

from .models import ClusterNode


@admin.register(ClusterNode)
class ClusterNodeAdmin(admin.ModelAdmin):
    list_display = ("address", "schema", "api_extensions", "heartbeat")  # + state, below
    list_display_links = None
    ordering = ("id",)
    search_fields = ("address", "name")
    actions = None
    readonly_fields = ("name", "description", "address", "schema", "api_extensions", "heartbeat", "pending")

    def get_list_display(self, request):
        # Each row's state depends on every other row: read the table once per page,
        # in a closure (not on self: the ModelAdmin is shared between threads).
        members = list(ClusterNode.objects.using(self.get_queryset(request).db))

        @admin.display(description="gate state")
        def state(obj):
            return obj.gate_state(members)

        return ("address", "schema", "api_extensions", "heartbeat", state)

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
        return super().changelist_view(request, extra_context)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
