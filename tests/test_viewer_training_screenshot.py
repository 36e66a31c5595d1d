"""The screenshot of docs/images/training.png: the real window under Xvfb while a tiny teacher
trains (progress panel with moving plots, live preview in the view). Skipped unless asked for:

    NSV_TRAINING_SCREENSHOT=docs/images/training.png .venv/bin/python -m pytest \\
        tests/test_viewer_training_screenshot.py -s -o xvfb_width=1400 -o xvfb_height=900 -o xvfb_colordepth=24
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from PyQt6.QtCore import QSettings

from viewer.main_window import MainWindow

TARGET = os.environ.get("NSV_TRAINING_SCREENSHOT")


@pytest.mark.skipif(not TARGET, reason="writes the docs screenshot; set NSV_TRAINING_SCREENSHOT=PATH to run")
def test_training_screenshot(qtbot, tmp_path):
    from models.data.procedural import ProceduralScene

    torch.set_num_threads(1)
    data = ProceduralScene().write_dataset(tmp_path / "data", size=96, views=(40, 8, 8))
    win = MainWindow(settings=QSettings(str(tmp_path / "viewer.ini"), QSettings.Format.IniFormat), device="cpu")
    qtbot.addWidget(win)
    win.resize(1280, 800)
    win.hud.setVisible(False)
    win.show()
    qtbot.waitExposed(win)
    dlg = win.training.new_training()
    dlg.dataset_edit.setText(str(data))
    dlg.check_dataset()
    dlg.output_edit.setText(str(tmp_path / "scene"))
    dlg.check_output()
    dlg.preset.setCurrentIndex(dlg.preset.findData("tiny"))
    dlg.device.setCurrentIndex(dlg.device.findData("cpu"))
    dlg.snapshot_every.setValue(3.0)
    dlg.checkpoint_every.setValue(5.0)
    dlg.start_button.click()
    s = win.training.session
    panel = win.training.panel
    panel.share.setValue(60)  # leave the CPU renderer time to refine the preview between snapshots
    # wait for two validations (steps 200 and 400 of 600) and a live-preview frame on screen
    qtbot.waitUntil(lambda: len(panel.curves["teacher"]["val_step"]) >= 2 or s.outcome is not None, timeout=180_000)
    def preview_shown():
        f = win.last_frame
        return f is not None and f.backends == ("nerf",) and f.width >= f.full_width // 2 and not f.final

    qtbot.waitUntil(preview_shown, timeout=60_000)
    assert s.running, "\n".join(s.log)
    qtbot.wait(1500)
    n = panel.redraws
    qtbot.waitUntil(lambda: panel.redraws > n, timeout=5_000)  # the plot is moving
    pix = win.grab()
    Path(TARGET).parent.mkdir(parents=True, exist_ok=True)
    assert pix.save(TARGET)
    print(f"\nwrote {TARGET} at step {panel.rows['teacher'].step} ({pix.width()}x{pix.height()})")
    win.training.shutdown()
    win.close()
