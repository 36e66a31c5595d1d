"""Rendering in a process of its own: the GUI process keeps no torch work of its frames.

``RenderServer`` starts one child process (``torch.multiprocessing``, spawn: a fresh interpreter,
no Qt state, no CUDA context copied) that owns the real backends. ``RenderServer.create`` returns
a ``RemoteBackend``: the part of the ``RendererBackend`` interface the render worker uses (``load``,
``render``, ``load_state_dict``, ``label``, ``device``, ``supported_outputs``, ``accel``,
``parameter_count``), each call a message to the child over a pipe. The render worker's
scheduling (dynamic resolution, refinement, compare pairs, offline jobs, tasks) is unchanged; only
the frame's torch work moves, so the GUI process's interpreter is free for events while a frame
renders, however long the frame's Python dispatch takes.

Frames come back through shared memory. The GUI process allocates the output buffers (``_SlotPool``),
hands each one to the child once, and names the buffers to write in every render message; the
child copies the backend's output into them, and the frame's arrays are views of those buffers: the
only copy left on the GUI's side is the texture upload. A buffer goes back to the pool when the last
array that views it is released (``weakref.finalize``), so a frame the GUI still holds (the
refinement's base, the frame on screen) is never overwritten.

Abort: a render's ``should_abort`` is the GUI side's; the worker thread polls it every millisecond
while it waits for the reply and, once it is true, writes the render's id into a shared value that
the child's ``should_abort`` reads between chunks; the child answers "aborted" and the call raises
``RenderAborted``, as a backend in the same process would.

A child that dies (killed, crashed) turns the call in flight into an error naming its exit code;
the next call starts a new child, and each ``RemoteBackend`` loads itself again there from its
scene (and the weights last published to it).
"""

from __future__ import annotations

import itertools
import threading
import time
import traceback
import weakref

import torch

from models.backends.base import BackendUnavailable, RenderAborted, RenderRequest, RenderResult


class RenderProcessError(RuntimeError):
    """The render process failed a call (its message), or ended while one was in flight."""


# ------------------------------------------------------------------------------ child side
def _serve(conn, abort, threads: int, extra_backends: dict[str, str]) -> None:
    """The child's loop: one message in, one reply out, until "stop" or the pipe closes."""
    import importlib

    from models.backends import registry

    if threads > 0:
        torch.set_num_threads(threads)
    for name, where in extra_backends.items():  # "package.module:Class", registered as in the GUI process
        module, _, cls = where.partition(":")
        registry.BACKENDS = {**registry.BACKENDS, name: getattr(importlib.import_module(module), cls)}
    backends: dict[int, object] = {}
    slots: dict[int, torch.Tensor] = {}
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        op = msg[0]
        try:
            if op == "stop":
                conn.send(("ok", None))
                return
            if op == "slot":  # ("slot", id, flat shared tensor) or ("slot", id, None): forget it
                if msg[2] is None:
                    slots.pop(msg[1], None)
                else:
                    slots[msg[1]] = msg[2]
                continue  # no reply: slots travel ahead of the render that uses them
            if op == "load":  # the GUI's Scene object itself; a live preview's snapshot beside it
                _, key, name, device, accel, scene, preview = msg
                t0 = time.perf_counter()
                b = registry.create(name, device, accel)
                if preview is not None:
                    from models.training.pipeline import PreviewScene

                    scene = PreviewScene(scene, *preview)
                b.load(scene)
                backends[key] = b
                conn.send(("ok", {"label": b.label or b.name, "device": str(b.device),
                                  "parameters": int(b.parameter_count()),
                                  "supported_outputs": sorted(b.supported_outputs), "accel": b.accel,
                                  "load_ms": (time.perf_counter() - t0) * 1000.0}))
            elif op == "render":
                _, key, rid, request, out = msg
                b = backends.get(key)
                if b is None:
                    conn.send(("unknown", None))
                    continue
                res = b.render(request, lambda: abort.value == rid)
                present = {}
                for kind, slot_id in out.items():
                    t = getattr(res, kind)
                    if t is None:
                        continue
                    dst = slots[slot_id][: t.numel()].view(t.shape)
                    dst.copy_(t)
                    present[kind] = tuple(t.shape)
                conn.send(("ok", {"present": present, "elapsed_ms": res.elapsed_ms,
                                  "samples_per_ray": res.samples_per_ray, "flops_per_ray": res.flops_per_ray,
                                  "extras": _plain(res.extras)}))
            elif op == "state":
                _, key, state, config = msg
                b = backends.get(key)
                if b is None:
                    conn.send(("unknown", None))
                    continue
                b.load_state_dict(state, config)
                conn.send(("ok", None))
            elif op == "drop":
                backends.pop(msg[1], None)
                continue
            else:
                conn.send(("error", f"unknown message {op!r}", ""))
        except RenderAborted:
            conn.send(("aborted", None))
        except BackendUnavailable as e:
            conn.send(("unavailable", str(e)))
        except Exception as e:  # noqa: BLE001 - every failure goes back to the GUI as a message
            conn.send(("error", f"{type(e).__name__}: {e}", traceback.format_exc()))


def _plain(extras: dict) -> dict:
    """The picklable, tensor-free part of a result's extras."""
    return {k: v for k, v in extras.items() if isinstance(v, (int, float, str, bool, type(None)))}


# ------------------------------------------------------------------------------- GUI side
class _SlotPool:
    """Shared float32 buffers for frames, reused once no array views them any more."""

    MAX_FREE = 8

    def __init__(self, send):
        self._send = send
        self._ids = itertools.count(1)
        self._tensors: dict[int, torch.Tensor] = {}
        self._free: list[int] = []
        self._lock = threading.Lock()

    def take(self, numel: int) -> int:
        """A free buffer of at least ``numel`` floats (the smallest that fits), else a new one."""
        with self._lock:
            fits = [i for i in self._free if self._tensors[i].numel() >= numel]
            if fits:
                best = min(fits, key=lambda i: self._tensors[i].numel())
                self._free.remove(best)
                return best
            while len(self._free) >= self.MAX_FREE:  # too many idle buffers of other sizes: drop the smallest
                drop = min(self._free, key=lambda i: self._tensors[i].numel())
                self._free.remove(drop)
                del self._tensors[drop]
                self._send(("slot", drop, None))
        sid = next(self._ids)
        # capacities are powers of two (at least 64k floats): the dynamic resolution's changing frame
        # sizes then fall into a few buffer sizes, reused from the pool instead of allocated and sent
        t = torch.empty(max(1 << 16, 1 << (int(numel) - 1).bit_length()), dtype=torch.float32).share_memory_()
        with self._lock:
            self._tensors[sid] = t
        self._send(("slot", sid, t))
        return sid

    def give_back(self, sid: int) -> None:
        with self._lock:
            if sid in self._tensors and sid not in self._free:
                self._free.append(sid)

    def array(self, sid: int, shape: tuple[int, ...]) -> torch.Tensor:
        """A tensor viewing buffer ``sid`` as ``shape``; the buffer returns to the pool when the last
        array or tensor viewing it is released."""
        t = self._tensors[sid]
        arr = t[: int(torch.Size(shape).numel())].view(shape).numpy()
        weakref.finalize(arr, self.give_back, sid)
        return torch.from_numpy(arr)

    def reset(self) -> None:
        """A new child knows no buffers: forget them all (frames still held keep their memory)."""
        with self._lock:
            self._tensors.clear()
            self._free.clear()

    @property
    def allocated(self) -> int:
        return len(self._tensors)


class RenderServer:
    """The GUI side of the render process (one child; started on first use, restarted after a crash).

    Calls come from one thread at a time (the render worker's); a lock serialises them anyway."""

    POLL_S = 0.001

    def __init__(self, threads: int = 0, extra_backends: dict[str, str] | None = None):
        self.threads = threads
        """torch intra-op threads of the child (0: torch's default)."""
        self.extra_backends = dict(extra_backends or {})
        """Backends beyond the registry's, name -> "package.module:Class" (importable in the child)."""
        self._proc = None
        self._conn = None
        self._abort = None
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._generation = 0
        """Incremented per child started: a RemoteBackend loaded in an older child loads again."""
        self.slots = _SlotPool(self._send_raw)
        self.last_exit: int | None = None

    # --------------------------------------------------------------------- process lifecycle
    def start(self) -> None:
        with self._lock:
            if self._proc is not None and self._proc.is_alive():
                return
            import torch.multiprocessing as mp

            ctx = mp.get_context("spawn")
            self._abort = ctx.Value("q", 0, lock=False)
            parent, child = ctx.Pipe(duplex=True)
            self._proc = ctx.Process(target=_serve, args=(child, self._abort, self.threads, self.extra_backends),
                                     name="render", daemon=True)
            self._proc.start()
            child.close()
            self._conn = parent
            self._generation += 1
            self.slots.reset()

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the child to exit (and kill it if it does not within ``timeout``). A call still in
        flight on another thread (a long frame at shutdown) is not waited for: the child is killed
        and that call fails."""
        proc = self._proc
        if proc is None:
            return
        if not self._lock.acquire(timeout=0.2):
            proc.kill()
            proc.join(timeout)
            return
        try:
            proc, conn = self._proc, self._conn
            self._proc = self._conn = None
            if proc is None:
                return
            try:
                if proc.is_alive():
                    conn.send(("stop",))
                    if conn.poll(timeout):
                        conn.recv()
            except (OSError, EOFError):
                pass
            proc.join(timeout)
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)
            conn.close()
        finally:
            self._lock.release()

    # ------------------------------------------------------------------------------ messages
    def _send_raw(self, msg) -> None:
        if self._conn is not None:
            try:
                self._conn.send(msg)
            except (OSError, EOFError):
                pass  # the next call notices the dead child

    def _died(self) -> RenderProcessError:
        proc = self._proc
        code = None
        if proc is not None:
            proc.join(1.0)
            code = proc.exitcode
        self.last_exit = code
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None
        return RenderProcessError(f"the render process ended unexpectedly (exit code {code}); "
                                  "it restarts with the next frame")

    def call(self, msg, should_abort=None):
        """Send ``msg``, wait for its reply; ``should_abort`` (render calls) is polled meanwhile.

        Returns (status, payload) for status "ok", "unknown"; raises RenderAborted, BackendUnavailable,
        RenderProcessError."""
        with self._lock:
            self.start()
            rid = msg[2] if msg[0] == "render" else None
            try:
                self._conn.send(msg)
                asked = False
                while not self._conn.poll(self.POLL_S):
                    if not self._proc.is_alive() and not self._conn.poll(0):
                        raise EOFError
                    if rid is not None and not asked and should_abort is not None and should_abort():
                        self._abort.value = rid
                        asked = True
                reply = self._conn.recv()
            except (EOFError, OSError, BrokenPipeError):
                raise self._died() from None
            status = reply[0]
            if status == "aborted":
                raise RenderAborted()
            if status == "unavailable":
                raise BackendUnavailable(reply[1])
            if status == "error":
                raise RenderProcessError(reply[1])
            return status, reply[1]

    def next_id(self) -> int:
        return next(self._ids)

    def create(self, name: str, device: str | None = None, accel: str = "auto") -> "RemoteBackend":
        """A backend ``name`` of the child (as ``registry.create``; loaded by ``load``)."""
        from models.backends import registry

        cls = registry.backend_class(name)  # unknown names and paths fail here, as in-process
        cls.check_accel(accel)
        return RemoteBackend(self, name, device, accel, cls)

    def factory(self):
        """A ``registry.create``-like function creating backends of this server."""
        return self.create


class RemoteBackend:
    """A backend living in the render process (see the module's docstring)."""

    def __init__(self, server: RenderServer, name: str, device: str | None, accel: str, cls):
        self.server = server
        self.name = name
        self.label = cls.label or name
        self.accel = accel
        self.supported_outputs = frozenset(cls.supported_outputs)
        self.device = torch.device("cpu")
        self._device_arg = device
        self._parameters = 0
        self._key = server.next_id()
        self._scene = None
        self._preview = None
        self._generation = -1
        self._state = None

    def load(self, scene) -> None:
        """Load from ``scene``: a Scene (sent to the child as it is) or a live preview's
        ``PreviewScene`` (its scene and snapshot sent apart)."""
        from models.training.pipeline import PreviewScene

        if isinstance(scene, PreviewScene):
            self._scene = scene._scene  # noqa: SLF001 - the preview's parts travel separately
            self._preview = (scene._backend, scene._state, scene._config)  # noqa: SLF001
        else:
            self._scene, self._preview = scene, None
        self._load()

    def _load(self) -> None:
        _, info = self.server.call(("load", self._key, self.name, self._device_arg, self.accel, self._scene,
                                    self._preview))
        self._generation = self.server.generation
        self.label = info["label"]
        self.device = torch.device(info["device"])
        self._parameters = info["parameters"]
        self.supported_outputs = frozenset(info["supported_outputs"])
        if self._state is not None:  # weights published after the scene's: keep showing them
            self.server.call(("state", self._key, *self._state))

    def _ensure_loaded(self) -> None:
        if self._scene is not None and self._generation != self.server.generation:
            self.server.start()
            self._load()

    def parameter_count(self) -> int:
        return self._parameters

    def render(self, request: RenderRequest, should_abort=None) -> RenderResult:
        self._ensure_loaded()
        server = self.server
        h, w = request.height, request.width
        kinds = ["rgb"] + [k for k in ("depth", "acc") if k in request.outputs and k in self.supported_outputs]
        sizes = {"rgb": h * w * 3, "depth": h * w, "acc": h * w}
        with server._lock:
            server.start()
            out = {k: server.slots.take(sizes[k]) for k in kinds}
            try:
                status, meta = server.call(("render", self._key, server.next_id(), request, out), should_abort)
                if status == "unknown":  # the child restarted since this backend loaded
                    self._ensure_loaded()
                    status, meta = server.call(("render", self._key, server.next_id(), request, out), should_abort)
            except BaseException:
                for sid in out.values():
                    server.slots.give_back(sid)
                raise
        arrays = {}
        for kind, sid in out.items():
            if kind in meta["present"]:
                arrays[kind] = server.slots.array(sid, meta["present"][kind])
            else:
                server.slots.give_back(sid)
        return RenderResult(arrays["rgb"], arrays.get("depth"), arrays.get("acc"), meta["elapsed_ms"],
                            meta["samples_per_ray"], meta["flops_per_ray"], meta["extras"])

    def load_state_dict(self, state: dict, config: dict | None = None) -> None:
        self._state = (state, config)
        self._ensure_loaded()
        self.server.call(("state", self._key, state, config))

    def release(self) -> None:
        """Forget this backend in the child (a new scene)."""
        self.server._send_raw(("drop", self._key))
