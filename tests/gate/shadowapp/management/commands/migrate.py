from django.core.management.commands.migrate import Command as DjangoMigrate


class Command(DjangoMigrate):
    """Stands for any third-party app's ``migrate`` that would hide the gated one."""
