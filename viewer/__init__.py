"""The desktop viewer (PyQt6 + PyOpenGL). Entry point: ``viewer.app.run_viewer``."""
