"""Two tiny views for the failover-between-requests test."""

from django.http import JsonResponse
from django.urls import include, path

from .bapp.models import Item


def add(request, name):
    item = Item.objects.create(name=name, value=len(name))
    return JsonResponse({"id": item.pk})


def names(request):
    return JsonResponse({"names": list(Item.objects.order_by("pk").values_list("name", flat=True))})


urlpatterns = [
    path("add/<str:name>/", add),
    path("names/", names),
    path("dqcluster/", include("django_dqcluster.urls")),
]
