"""Application entry point: ``run_viewer(scene_path, argv)`` (called by ``main.py view``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from PyQt6.QtCore import QTimer
from PyQt6.QtGui import QSurfaceFormat
from PyQt6.QtWidgets import QApplication

from viewer.gl_canvas import surface_format
from viewer.main_window import APP_NAME, DEMO_SCENE, MainWindow


def create_application(argv: list[str] | None = None) -> QApplication:
    """The QApplication (existing one reused), with the GL 3.3 core default format set first."""
    app = QApplication.instance()
    if app is None:
        QSurfaceFormat.setDefaultFormat(surface_format())
        app = QApplication(list(argv) if argv else [sys.argv[0] if sys.argv else "viewer"])
    app.setApplicationName(APP_NAME)
    app.setOrganizationName("neural-scene-viewer")
    return app


def configure_torch_threads(device: str | None) -> None:
    """On CPU, leave one core to the GUI thread and the GL driver.

    torch's intra-op threads spin while they wait; with every core taken the GUI thread and
    llvmpipe get starved and a render can slow down many times over (measured 100x for tiny
    renders on a busy 2-core machine).
    """
    import torch

    from viewer.main_window import render_threads

    n = render_threads(device)  # the render process gets the same number
    if n:
        torch.set_num_threads(n)


def run_viewer(scene_path: str | None, argv: list[str] | None = None, device: str | None = None,
               screenshot: str | None = None, quit_after: float | None = None,
               accel: dict[str, str] | None = None, render_process: bool = True) -> int:
    """Open the viewer window and run the event loop; returns the exit code.

    ``scene_path`` None opens the bundled demo scene (assets/demo_scene) when it exists;
    otherwise the window explains what to do and offers a folder dialog. ``quit_after`` seconds
    closes the window (for smoke tests and scripted screenshots), saving the GL canvas to
    ``screenshot`` first when given. ``accel`` names the execution path of backends (name ->
    path, as ``main.py view --accel``); the others take the fastest that works. ``render_process``
    renders in a process of its own (``viewer.render_process``), else on a thread of this one.
    """
    app = create_application(argv)
    configure_torch_threads(device)
    window = MainWindow(device=device, accel=accel, render_process=render_process)
    previous_hook = sys.excepthook
    sys.excepthook = window.report_exception  # an error in a slot must not abort the process
    window.show()
    if scene_path:
        window.open_scene(scene_path)
    elif (DEMO_SCENE / "scene.json").exists():
        window.open_scene(DEMO_SCENE)
    else:
        window.show_welcome()
        QTimer.singleShot(0, window.open_scene_dialog)
    freeze_startup_heap()
    if quit_after:
        def finish():
            if screenshot:  # what the GL canvas shows, exactly (also proves a frame was drawn)
                window.canvas.grabFramebuffer().save(screenshot)
            app.quit()

        QTimer.singleShot(int(quit_after * 1000), finish)
    code = 1
    try:
        code = app.exec()
        return code
    finally:
        clean = window.shutdown()
        sys.excepthook = previous_hook
        if not clean:  # the render thread is inside a long, uninterruptible load: do not wait for it
            print("note: the render thread was still busy when the window closed; exiting without waiting",
                  file=sys.stderr)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)


def freeze_startup_heap() -> None:
    """Move every object alive now (torch, Qt, numpy and the window: ~200k objects) out of the
    cyclic garbage collector's reach.

    A full collection scans all tracked objects while holding the GIL: 31-39 ms on the 2-core
    machine right after start-up, a stall of the event loop whenever one happens during a drag
    or a training job. Frozen, the start-up objects are never scanned again (0.002 ms for the
    same collection); objects created later are collected as usual.
    """
    import gc

    gc.collect()
    gc.freeze()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    paths = [a for a in argv[1:] if not a.startswith("-")]
    return run_viewer(str(Path(paths[0])) if paths else None, argv)
