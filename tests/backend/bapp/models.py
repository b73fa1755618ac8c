from django.db import models


class Item(models.Model):
    name = models.CharField(max_length=100)
    value = models.IntegerField(default=0)
    created = models.DateField(null=True)

    class Meta:
        app_label = "bapp"
