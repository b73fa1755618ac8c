from django.apps import AppConfig


class DqclusterConfig(AppConfig):
    """The app: management commands (dqcluster_node, ...). The ENGINE works without it.

    ``ready()`` must not touch the database: Django warns about queries
    during app initialisation, and a node may not be reachable yet.
    """

    name = "django_dqcluster"
    label = "dqcluster"
    verbose_name = "Django dqcluster"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # System checks (dqcluster.W001...) register themselves when imported.
        from . import checks  # noqa: F401
