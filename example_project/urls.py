from django.contrib import admin
from django.urls import include, path

from .notes import views

urlpatterns = [
    path("", views.notes, name="notes"),
    path("admin/", admin.site.urls),
    path("dqcluster/", include("django_dqcluster.urls")),  # GET /dqcluster/health, for load balancers
]
