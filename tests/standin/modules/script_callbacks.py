"""Callback registries: registration is permanent until removed, as in the host."""

callbacks = {"ui_settings": [], "script_unloaded": []}


def on_ui_settings(callback, *, name=None):
    callbacks["ui_settings"].append(callback)


def on_script_unloaded(callback, *, name=None):
    callbacks["script_unloaded"].append(callback)


def script_unloaded_callback():
    for cb in reversed(callbacks["script_unloaded"]):
        cb()
