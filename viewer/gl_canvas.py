"""The GL view: shows render-worker frames scaled to the widget, and turns mouse/keys into
camera gestures.

- OpenGL 3.3 core (``surface_format``), shaders loaded by file name from ``shaders/`` (a line
  ``#include "file"`` is replaced by that file's text).
- ``set_frame`` only stores the frame and schedules a repaint; the texture upload happens in
  ``paintGL`` (GL thread = GUI thread), timed in ``upload_ms``/``draw_ms``.
- Frames of any render resolution are stretched to a letterboxed viewport with the aspect of the
  view they were requested for (linear filtering, so low-resolution frames look soft, not blocky).
- Split view (comparator): a frame with two images is drawn by ``split.frag`` with a divider
  the user can drag, or as two panes side by side (``side_by_side``; the view is then requested
  at the size of one pane, ``view_size``). ``compare_sources`` says what each side shows: image
  A or B, the reference image of ``reference_frame`` (ground truth or the teacher's render), or a
  difference heatmap (|A-B|, |A-ref|, |B-ref|, turbo up to ``heat_max``).
- Scene guides (``set_guides``, ``set_guides_visible``): the dataset cameras' frustums and the
  bounding box (``viewer/scene_guides.py``) drawn as GL lines over the image by ``guides.vert`` /
  ``guides.frag``, projected with the current camera onto each shown image (each pane side by side).
- GL objects are freed on the context's ``aboutToBeDestroyed`` between makeCurrent/doneCurrent.

The HUD, help and message overlays are ordinary child widgets (not part of the framebuffer), and
``grabFramebuffer()`` leaves the scene guides out, so it returns exactly the rendered pixels;
``grab_view()`` returns the view as shown, guides included.
"""

from __future__ import annotations

import ctypes
import re
import time
from pathlib import Path

import numpy as np
from OpenGL import GL
from PyQt6.QtCore import QPointF, Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QSurfaceFormat
from PyQt6.QtOpenGLWidgets import QOpenGLWidget

from viewer.camera import OrbitCamera
from viewer.render_worker import Frame
from viewer.scene_guides import SceneGuides, view_projection

SHADER_DIR = Path(__file__).resolve().parent.parent / "shaders"
MODE_INDEX = {"rgb": 0, "depth": 1, "acc": 2}
COMPARE_SOURCES = {"a": 0, "b": 1, "ref": 2, "diff_ab": 3, "diff_a_ref": 4, "diff_b_ref": 5}
"""What one side of a compared frame shows (``u_left_src``/``u_right_src`` of split.frag)."""
BACKGROUND = (0.09, 0.09, 0.10)
FLY_KEYS = {Qt.Key.Key_W: (1, 0, 0), Qt.Key.Key_S: (-1, 0, 0), Qt.Key.Key_D: (0, 1, 0),
            Qt.Key.Key_A: (0, -1, 0), Qt.Key.Key_E: (0, 0, 1), Qt.Key.Key_Q: (0, 0, -1)}


def surface_format() -> QSurfaceFormat:
    """OpenGL 3.3 core, no depth buffer, vsync."""
    fmt = QSurfaceFormat()
    fmt.setVersion(3, 3)
    fmt.setProfile(QSurfaceFormat.OpenGLContextProfile.CoreProfile)
    fmt.setDepthBufferSize(0)
    fmt.setStencilBufferSize(0)
    fmt.setSwapInterval(1)
    return fmt


def load_shader_source(name: str, shader_dir: Path = SHADER_DIR, _seen: frozenset = frozenset()) -> str:
    """Text of ``shaders/<name>`` with ``#include "file"`` lines expanded (once per file)."""
    path = shader_dir / name
    if name in _seen:
        raise ValueError(f"shader include cycle at {name}")
    text = path.read_text()

    def include(m: re.Match) -> str:
        return load_shader_source(m.group(1), shader_dir, _seen | {name})

    return re.sub(r'^\s*#include\s+"([^"]+)"\s*$', include, text, flags=re.M)


def letterbox(widget_w: int, widget_h: int, aspect: float) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the largest rectangle of ``aspect`` (w/h) centred in the widget."""
    if widget_w <= 0 or widget_h <= 0 or aspect <= 0:
        return 0, 0, max(widget_w, 0), max(widget_h, 0)
    if widget_w / widget_h > aspect:
        w = max(1, round(widget_h * aspect))
        return (widget_w - w) // 2, 0, w, widget_h
    h = max(1, round(widget_w / aspect))
    return 0, (widget_h - h) // 2, widget_w, h


class ShaderError(RuntimeError):
    pass


def compile_program(vert: str, frag: str) -> int:
    """Link a program from two shader files of ``shaders/``; ShaderError with the GL log on failure."""
    shaders = []
    for name, kind in ((vert, GL.GL_VERTEX_SHADER), (frag, GL.GL_FRAGMENT_SHADER)):
        sh = GL.glCreateShader(kind)
        GL.glShaderSource(sh, load_shader_source(name))
        GL.glCompileShader(sh)
        if not GL.glGetShaderiv(sh, GL.GL_COMPILE_STATUS):
            log = GL.glGetShaderInfoLog(sh)
            raise ShaderError(f"{name}: {log.decode() if isinstance(log, bytes) else log}")
        shaders.append(sh)
    prog = GL.glCreateProgram()
    for sh in shaders:
        GL.glAttachShader(prog, sh)
    GL.glLinkProgram(prog)
    for sh in shaders:
        GL.glDetachShader(prog, sh)
        GL.glDeleteShader(sh)
    if not GL.glGetProgramiv(prog, GL.GL_LINK_STATUS):
        log = GL.glGetProgramInfoLog(prog)
        raise ShaderError(f"{vert}+{frag}: {log.decode() if isinstance(log, bytes) else log}")
    return prog


class _Texture:
    """One 2D float texture that is reallocated only when the frame's shape changes."""

    def __init__(self):
        self.id = GL.glGenTextures(1)
        self.shape: tuple | None = None
        GL.glBindTexture(GL.GL_TEXTURE_2D, self.id)
        for p, v in ((GL.GL_TEXTURE_MIN_FILTER, GL.GL_LINEAR), (GL.GL_TEXTURE_MAG_FILTER, GL.GL_LINEAR),
                     (GL.GL_TEXTURE_WRAP_S, GL.GL_CLAMP_TO_EDGE), (GL.GL_TEXTURE_WRAP_T, GL.GL_CLAMP_TO_EDGE)):
            GL.glTexParameteri(GL.GL_TEXTURE_2D, p, v)

    def upload(self, image: np.ndarray) -> None:
        image = np.ascontiguousarray(image, dtype=np.float32)
        h, w = image.shape[:2]
        channels = 1 if image.ndim == 2 else image.shape[2]
        fmt, internal = (GL.GL_RED, GL.GL_R32F) if channels == 1 else (GL.GL_RGB, GL.GL_RGB32F)
        GL.glBindTexture(GL.GL_TEXTURE_2D, self.id)
        GL.glPixelStorei(GL.GL_UNPACK_ALIGNMENT, 4)
        if self.shape != image.shape:
            GL.glTexImage2D(GL.GL_TEXTURE_2D, 0, internal, w, h, 0, fmt, GL.GL_FLOAT, image)
            self.shape = image.shape
        else:
            GL.glTexSubImage2D(GL.GL_TEXTURE_2D, 0, 0, 0, w, h, fmt, GL.GL_FLOAT, image)

    def delete(self) -> None:
        GL.glDeleteTextures(1, [self.id])


class GLCanvas(QOpenGLWidget):
    """Shows frames; emits ``viewChanged`` after every camera gesture."""

    viewChanged = pyqtSignal()
    """The camera moved (drag, wheel, fly, divider excluded)."""
    resized = pyqtSignal()
    """The widget size (and so the full render resolution) changed."""
    glError = pyqtSignal(str)
    """Shader/GL setup failed; the message says why."""
    framePainted = pyqtSignal(object)
    """Frame, after its texture was uploaded and drawn (timings in upload_ms/draw_ms)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setFormat(surface_format())
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMouseTracking(False)
        self.setMinimumSize(160, 120)
        self.camera: OrbitCamera | None = None
        self.frame: Frame | None = None
        self._dirty = False
        self.divider = 0.5
        """Split position (0..1 across the image) when a frame carries two images."""
        self.side_by_side = False
        """Two-image frames as two panes (each requested at ``view_size``) instead of the divider."""
        self.compare_sources: tuple[str, ...] = ("a", "b")
        """Left and right side (COMPARE_SOURCES keys); one entry: that source across the whole view."""
        self.heat_max = 0.2
        """Mean absolute RGB error shown at the top of the heatmap's colour map."""
        self.reference_frame: Frame | None = None
        """Frame of images [A, B, reference], shown instead of ``frame`` while a source needs "ref"."""
        self._uploaded: Frame | None = None
        self.sync_timing = False
        """glFinish after upload/draw so upload_ms/draw_ms include the GPU work (benchmarks)."""
        self.upload_ms = 0.0
        self.draw_ms = 0.0
        self.frames_painted = 0
        self.gl_renderer = ""
        """GL_RENDERER and GL_VERSION of the context (for benchmark reports)."""
        self.guides: SceneGuides | None = None
        """Frustums and bounding box of the open scene (None: nothing to draw)."""
        self.show_guides = False
        self.guides_current = -1
        """Dataset camera drawn highlighted (the one the view is snapped to; -1: none)."""
        self._guides_dirty = False
        self._guide_vertices = 0
        self._render_only = False
        """Set while grabFramebuffer renders: guides are left out of the grabbed pixels."""
        self._programs: dict[str, int] = {}
        self._textures: list[_Texture] = []
        self._vao = None
        self._guide_vao = None
        self._guide_vbo = None
        self._gl_ready = False
        self._drag_button = None
        self._drag_divider = False
        self._last_pos = QPointF()
        self._held: set = set()
        self._fly_timer = QTimer(self)
        self._fly_timer.setInterval(16)
        self._fly_timer.timeout.connect(self._fly_tick)
        self._fly_last = time.perf_counter()

    # ------------------------------------------------------------------------------ frames
    def set_frame(self, frame: Frame | None) -> None:
        self.frame = frame
        self._dirty = True
        self.update()

    def render_size(self) -> tuple[int, int]:
        """Full render resolution: the widget in device pixels."""
        r = self.devicePixelRatioF()
        return max(1, round(self.width() * r)), max(1, round(self.height() * r))

    def view_size(self) -> tuple[int, int]:
        """Size a view is rendered at: the widget, or one pane of it side by side."""
        w, h = self.render_size()
        return (max(1, w // 2), h) if self.side_by_side else (w, h)

    def set_compare_style(self, side_by_side: bool | None = None, sources: tuple[str, ...] | None = None,
                          heat_max: float | None = None, reference_frame: Frame | None | bool = False) -> None:
        """Change how two-image frames are shown (``reference_frame=None`` forgets the reference)."""
        if side_by_side is not None:
            self.side_by_side = bool(side_by_side)
        if sources is not None:
            if not sources or len(sources) > 2 or any(s not in COMPARE_SOURCES for s in sources):
                raise ValueError(f"compare sources: one or two of {list(COMPARE_SOURCES)}, got {sources}")
            self.compare_sources = tuple(sources)
        if heat_max is not None:
            self.heat_max = float(heat_max)
        if reference_frame is not False:
            self.reference_frame = reference_frame
        self.update()

    # ------------------------------------------------------------------------------ guides
    def set_guides(self, guides: SceneGuides | None) -> None:
        """The scene's frustums and box (uploaded at the next paint)."""
        self.guides = guides
        self.guides_current = -1
        self._guides_dirty = True
        self.update()

    def set_guides_visible(self, on: bool) -> None:
        self.show_guides = bool(on)
        self.update()

    def set_guides_current(self, index: int) -> None:
        if index != self.guides_current:
            self.guides_current = index
            self._guides_dirty = True
            self.update()

    def guides_drawn(self) -> bool:
        """Whether the guides are part of what the canvas paints on screen."""
        return self.show_guides and self.guides is not None and self.camera is not None

    def guide_request(self, width: int, height: int):
        """The current camera's view at ``width x height`` (what the guides are projected with)."""
        r = max(self.camera.scene_radius, 1e-6)
        return self.camera.request(width, height, 1e-3 * r, 1e4 * r)

    def grabFramebuffer(self):
        """The rendered pixels (scene guides left out, as screenshots have them)."""
        self._render_only = True
        try:
            return super().grabFramebuffer()
        finally:
            self._render_only = False
            self.update()  # the screen shows the guides again

    def grab_view(self):
        """The view as it is on screen, scene guides included."""
        return super().grabFramebuffer()

    def needs_reference(self) -> bool:
        return any(s in ("ref", "diff_a_ref", "diff_b_ref") for s in self.compare_sources)

    def displayed(self) -> tuple[Frame | None, tuple[str, ...]]:
        """The frame painted and the sources of its sides (plain A | B when the reference
        is not there yet, or in depth/opacity mode)."""
        f = self.frame
        if f is None or len(f.images) < 2:
            return f, ("a",)
        if f.mode != "rgb":
            return f, ("a", "b")
        if self.needs_reference():
            if self.reference_frame is None:
                return f, ("a", "b")
            return self.reference_frame, self.compare_sources
        return f, self.compare_sources

    def image_rect(self) -> tuple[int, int, int, int]:
        """(x, y, w, h) of the shown image in device pixels, y from the top."""
        w, h = self.render_size()
        f = self.displayed()[0]
        aspect = f.full_width / f.full_height if f else w / h
        x, y_gl, vw, vh = letterbox(w, h, aspect)
        return x, h - y_gl - vh, vw, vh

    # ---------------------------------------------------------------------------------- GL
    def initializeGL(self) -> None:
        ctx = self.context()
        ctx.aboutToBeDestroyed.connect(self._cleanup_gl)
        try:
            self.gl_renderer = " ".join(GL.glGetString(k).decode() for k in (GL.GL_RENDERER, GL.GL_VERSION))
        except (GL.GLError, AttributeError):
            self.gl_renderer = "unknown"
        try:
            self._programs = {"image": compile_program("fullscreen.vert", "image.frag"),
                              "split": compile_program("fullscreen.vert", "split.frag")}
        except (ShaderError, OSError, GL.GLError) as e:
            self._gl_ready = False
            self.glError.emit(f"OpenGL setup failed: {e}")
            return
        self._vao = GL.glGenVertexArrays(1)
        self._textures = [_Texture(), _Texture(), _Texture()]
        try:
            self._programs["guides"] = compile_program("guides.vert", "guides.frag")
        except (ShaderError, OSError, GL.GLError) as e:  # the frame still shows, without guides
            self.glError.emit(f"Scene guides unavailable: {e}")
        else:
            self._guide_vao = GL.glGenVertexArrays(1)
            self._guide_vbo = GL.glGenBuffers(1)
            GL.glBindVertexArray(self._guide_vao)
            GL.glBindBuffer(GL.GL_ARRAY_BUFFER, self._guide_vbo)
            stride = 6 * 4  # position + colour, float32
            GL.glEnableVertexAttribArray(0)
            GL.glVertexAttribPointer(0, 3, GL.GL_FLOAT, GL.GL_FALSE, stride, ctypes.c_void_p(0))
            GL.glEnableVertexAttribArray(1)
            GL.glVertexAttribPointer(1, 3, GL.GL_FLOAT, GL.GL_FALSE, stride, ctypes.c_void_p(12))
            GL.glBindVertexArray(0)
            GL.glBindBuffer(GL.GL_ARRAY_BUFFER, 0)
            self._guides_dirty = True
        self._gl_ready = True
        self._dirty = True

    def resizeGL(self, w: int, h: int) -> None:
        self.resized.emit()

    def paintGL(self) -> None:
        GL.glClearColor(*BACKGROUND, 1.0)
        GL.glClear(GL.GL_COLOR_BUFFER_BIT)
        f, sources = self.displayed()
        if not self._gl_ready:
            return
        if f is None:
            w, h = self.render_size()
            self._draw_guides([(0, 0, w, h)])
            return
        if self._dirty or f is not self._uploaded:
            if self.sync_timing:
                GL.glFinish()  # earlier queued work (Qt's composition of the last frame) is not ours
            t0 = time.perf_counter()
            for tex, img in zip(self._textures, f.images):
                tex.upload(img)
            if self.sync_timing:
                GL.glFinish()
            self.upload_ms = (time.perf_counter() - t0) * 1000.0
            self._dirty = False
            self._uploaded = f
            uploaded = True
        else:
            uploaded = False
        t0 = time.perf_counter()
        w, h = self.render_size()
        x, y, vw, vh = letterbox(w, h, f.full_width / f.full_height)
        GL.glViewport(x, y, vw, vh)
        viewports = [(x, y, vw, vh)]
        split = len(f.images) > 1
        prog = self._programs["split" if split else "image"]
        GL.glUseProgram(prog)
        GL.glUniform1i(GL.glGetUniformLocation(prog, "u_mode"), MODE_INDEX.get(f.mode, 0))
        GL.glUniform2f(GL.glGetUniformLocation(prog, "u_range"), *f.value_range)
        GL.glBindVertexArray(self._vao)
        if split:
            for unit, name in enumerate(("u_left", "u_right", "u_ref")):
                GL.glActiveTexture(GL.GL_TEXTURE0 + unit)
                GL.glBindTexture(GL.GL_TEXTURE_2D, self._textures[unit].id)
                GL.glUniform1i(GL.glGetUniformLocation(prog, name), unit)
            GL.glUniform1f(GL.glGetUniformLocation(prog, "u_heat_max"), self.heat_max)
            if len(sources) == 2 and self.side_by_side:
                panes = [(0, w // 2), (w // 2, w - w // 2)]
            else:
                panes = [(0, w)]
            viewports = []
            for i, (px, pw) in enumerate(panes):
                x, y, vw, vh = letterbox(pw, h, f.full_width / f.full_height)
                GL.glViewport(px + x, y, vw, vh)
                viewports.append((px + x, y, vw, vh))
                left = sources[min(i, len(sources) - 1)]
                right = sources[-1] if len(panes) == 1 else left
                divider = self.divider if len(panes) == 1 and len(sources) == 2 else 2.0
                GL.glUniform1i(GL.glGetUniformLocation(prog, "u_left_src"), COMPARE_SOURCES[left])
                GL.glUniform1i(GL.glGetUniformLocation(prog, "u_right_src"), COMPARE_SOURCES[right])
                GL.glUniform1f(GL.glGetUniformLocation(prog, "u_divider"), divider)
                GL.glUniform1f(GL.glGetUniformLocation(prog, "u_line_width"), 1.0 / max(vw, 1))
                GL.glDrawArrays(GL.GL_TRIANGLE_STRIP, 0, 4)
        else:
            GL.glActiveTexture(GL.GL_TEXTURE0)
            GL.glBindTexture(GL.GL_TEXTURE_2D, self._textures[0].id)
            GL.glUniform1i(GL.glGetUniformLocation(prog, "u_image"), 0)
            GL.glDrawArrays(GL.GL_TRIANGLE_STRIP, 0, 4)
        GL.glBindVertexArray(0)
        GL.glUseProgram(0)
        self._draw_guides(viewports)
        GL.glViewport(0, 0, w, h)
        if self.sync_timing:
            GL.glFinish()
        self.draw_ms = (time.perf_counter() - t0) * 1000.0
        if uploaded:
            self.frames_painted += 1
            self.framePainted.emit(f)

    def _draw_guides(self, viewports: list[tuple[int, int, int, int]]) -> None:
        """Frustums and box as lines over the image in each viewport (x, y, w, h), unless hidden
        or a grab for the rendered pixels is under way."""
        if not self.guides_drawn() or self._render_only or self._guide_vao is None:
            return
        if self._guides_dirty:
            verts = self.guides.vertices(self.guides_current)
            GL.glBindBuffer(GL.GL_ARRAY_BUFFER, self._guide_vbo)
            GL.glBufferData(GL.GL_ARRAY_BUFFER, verts.nbytes, verts, GL.GL_DYNAMIC_DRAW)
            GL.glBindBuffer(GL.GL_ARRAY_BUFFER, 0)
            self._guide_vertices = len(verts)
            self._guides_dirty = False
        prog = self._programs["guides"]
        GL.glUseProgram(prog)
        GL.glBindVertexArray(self._guide_vao)
        loc = GL.glGetUniformLocation(prog, "u_view_proj")
        for x, y, vw, vh in viewports:
            m = view_projection(self.guide_request(vw, vh)).astype(np.float32)
            GL.glViewport(x, y, vw, vh)
            GL.glUniformMatrix4fv(loc, 1, GL.GL_TRUE, m)  # row-major numpy
            GL.glDrawArrays(GL.GL_LINES, 0, self._guide_vertices)
        GL.glBindVertexArray(0)
        GL.glUseProgram(0)

    def _cleanup_gl(self) -> None:
        if not self._gl_ready:
            return
        self.makeCurrent()
        for tex in self._textures:
            tex.delete()
        for prog in self._programs.values():
            GL.glDeleteProgram(prog)
        if self._vao is not None:
            GL.glDeleteVertexArrays(1, [self._vao])
        if self._guide_vao is not None:
            GL.glDeleteVertexArrays(1, [self._guide_vao])
            GL.glDeleteBuffers(1, [self._guide_vbo])
        self._textures, self._programs, self._vao = [], {}, None
        self._guide_vao = self._guide_vbo = None
        self._guides_dirty = True
        self._gl_ready = False
        self.doneCurrent()

    # ------------------------------------------------------------------------------- input
    def _near_divider(self, pos: QPointF) -> bool:
        if self.frame is None or len(self.frame.images) < 2 or self.side_by_side or len(self.displayed()[1]) < 2:
            return False
        x, _, w, _ = self.image_rect()
        r = self.devicePixelRatioF()
        return abs(pos.x() * r - (x + self.divider * w)) < 6 * r

    def mousePressEvent(self, event) -> None:
        self.setFocus()
        self._last_pos = event.position()
        self._drag_button = event.button()
        self._drag_divider = event.button() == Qt.MouseButton.LeftButton and self._near_divider(event.position())
        event.accept()

    def mouseMoveEvent(self, event) -> None:
        if self._drag_button is None or self.camera is None:
            return
        pos = event.position()
        dx, dy = pos.x() - self._last_pos.x(), pos.y() - self._last_pos.y()
        self._last_pos = pos
        r = self.devicePixelRatioF()
        if self._drag_divider:
            x, _, w, _ = self.image_rect()
            self.divider = float(np.clip((pos.x() * r - x) / max(w, 1), 0.0, 1.0))
            self.update()
            return
        if self._drag_button == Qt.MouseButton.LeftButton:
            self.camera.orbit(dx, dy)
        elif self._drag_button in (Qt.MouseButton.RightButton, Qt.MouseButton.MiddleButton):
            self.camera.pan(dx * r, dy * r, self.render_size()[1])
        else:
            return
        self.viewChanged.emit()

    def mouseReleaseEvent(self, event) -> None:
        self._drag_button = None
        self._drag_divider = False

    def wheelEvent(self, event) -> None:
        if self.camera is None:
            return
        notches = event.angleDelta().y() / 120.0
        if notches:
            self.camera.dolly(notches)
            self.viewChanged.emit()
        event.accept()

    def keyPressEvent(self, event) -> None:
        key = Qt.Key(event.key())
        if key in FLY_KEYS and self.camera is not None:
            if not event.isAutoRepeat():
                self._held.add(key)
                if not self._fly_timer.isActive():
                    self._fly_last = time.perf_counter()
                    self._fly_timer.start()
            event.accept()
            return
        super().keyPressEvent(event)

    def keyReleaseEvent(self, event) -> None:
        key = Qt.Key(event.key())
        if key in FLY_KEYS:
            if not event.isAutoRepeat():
                self._held.discard(key)
                if not self._held:
                    self._fly_timer.stop()
            event.accept()
            return
        super().keyReleaseEvent(event)

    def focusOutEvent(self, event) -> None:
        self._held.clear()
        self._fly_timer.stop()
        super().focusOutEvent(event)

    def _fly_tick(self) -> None:
        now = time.perf_counter()
        dt, self._fly_last = min(now - self._fly_last, 0.1), now
        if not self._held or self.camera is None:
            self._fly_timer.stop()
            return
        f = sum(FLY_KEYS[k][0] for k in self._held)
        r = sum(FLY_KEYS[k][1] for k in self._held)
        u = sum(FLY_KEYS[k][2] for k in self._held)
        self.camera.fly(f, r, u, dt)
        self.viewChanged.emit()
