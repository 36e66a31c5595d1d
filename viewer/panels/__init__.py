"""Side-panel and overlay widgets of the main window (backends, view options, HUD, dialogs)."""
