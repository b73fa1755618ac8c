from django.urls import path

from . import views

app_name = "dqcluster"
urlpatterns = [
    path("health", views.health, name="health"),
    path("metrics", views.metrics, name="metrics"),
]
