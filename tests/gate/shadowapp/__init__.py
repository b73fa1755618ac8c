"""An app that ships its own ``migrate`` command, to test the INSTALLED_APPS order check."""
