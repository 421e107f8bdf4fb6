"""The fixtures every app's tests share come from the plugin below; the functions tests call are
imported from the modules of bankcore.testing, never from a conftest."""

pytest_plugins = ["bankcore.testing.fixtures"]
