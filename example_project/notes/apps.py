from django.apps import AppConfig


class NotesConfig(AppConfig):
    name = "example_project.notes"
    label = "notes"
