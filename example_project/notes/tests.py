"""The example's page, tested the usual way.

``python manage.py test notes`` creates the test database inside the store the
settings name (the embedded one-node store, or the cluster DATABASE_URL points
at) and drops it at the end; ``--parallel`` clones it there.
"""

from django.db import connection
from django.test import TestCase

from .models import Note


class NotesPageTests(TestCase):
    def test_a_posted_note_is_stored_and_listed(self):
        response = self.client.post("/", {"text": "replicated"}, follow=True)
        self.assertEqual([note.text for note in response.context["notes"]], ["replicated"])
        self.assertEqual(Note.objects.get().text, "replicated")

    def test_an_empty_note_is_refused_and_nothing_is_stored(self):
        response = self.client.post("/", {"text": ""})
        self.assertEqual(response.status_code, 200)
        self.assertTrue(response.context["form"].errors)
        self.assertFalse(Note.objects.exists())

    def test_the_page_shows_the_store_status(self):
        response = self.client.get("/")
        self.assertContains(response, "applied index")
        self.assertRegex(response.content.decode(), r"members \d+\.")

    def test_the_test_database_lives_in_the_store(self):
        connection.ensure_connection()
        self.assertTrue(connection.settings_dict["NAME"].startswith("test_"))
        self.assertIn(connection.settings_dict["NAME"], connection.connection.list_databases())
