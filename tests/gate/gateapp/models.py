from django.db import models


class Item(models.Model):
    """User data that must survive the rolling upgrade."""

    name = models.CharField(max_length=100)


class ApplyLog(models.Model):
    """One row per migration run: which host applied which migration (exactly once)."""

    host = models.CharField(max_length=200)
    migration = models.CharField(max_length=100)
