from django.contrib import admin
from django.urls import path

from .notes import views

urlpatterns = [
    path("", views.notes, name="notes"),
    path("admin/", admin.site.urls),
]
