"""One page: the notes stored in the replicated database, and a form to add one."""

from django import forms
from django.db import connection
from django.shortcuts import redirect, render

from .models import Note


class NoteForm(forms.ModelForm):
    class Meta:
        model = Note
        fields = ["text"]


def notes(request):
    form = NoteForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        form.save()
        return redirect("notes")
    connection.ensure_connection()  # Django connects lazily; the status needs the session now
    status = connection.connection.status() if hasattr(connection.connection, "status") else {}
    return render(request, "notes/notes.html", {
        "form": form,
        "notes": Note.objects.all()[:50],
        "status": status,
    })
