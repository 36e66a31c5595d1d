#!/usr/bin/env bash
# The real viewer's frame rate on a bare GPU machine: Xvfb + GLX from .viewerkit/, then
# `python benchmarks/bench_viewer.py SCENE --size 800 --seconds 6 [extra args]`.
#
# usage: bash benchmarks/gpu_viewer.sh SCENE OUTDIR [extra benchmarks/bench_viewer.py args]
#   e.g. bash benchmarks/gpu_viewer.sh assets/demo_scene "$OUT" --null-backend
# Needs .viewerkit/ (benchmarks/make_viewerkit.sh builds it; carry it to the GPU machine) and a Python
# with torch, numpy and safetensors. Nothing is installed into / except, when the machine has no
# /usr/bin/xkbcomp, a symlink to the kit's (Xvfb runs xkbcomp by that absolute path); it is removed
# at the end.
# Writes OUTDIR/bench.log (the table), OUTDIR/gl.log (GL probes, environment, diagnostics),
# OUTDIR/xvfb.log.
# GL path (GL_MODE): auto (default) tries, in order, nvidia (GLX through glvnd with
#   __GLX_VENDOR_LIBRARY_NAME=nvidia), nvidia-egl (Qt's xcb_egl integration with NVIDIA's EGL), mesa
#   (the kit's software Mesa: softpipe, no LLVM; slow, a diagnostic fallback only) and takes the first
#   whose probe window reports an NVIDIA renderer (mesa: any renderer). GL_MODE=nvidia|nvidia-egl|mesa
#   forces one.
# Env: PYTHON (default python3), VIEWERKIT (.viewerkit), VK (unpack prefix, /tmp/vk), BENCH_TIMEOUT
#   (300 s), PROBE_TIMEOUT (40 s per GL probe), VSYNC=0 (vsync off: __GL_SYNC_TO_VBLANK=0,
#   vblank_mode=0), DRI_DIR (a Mesa driver folder instead of the kit's softpipe, e.g. a carried
#   llvmpipe swrast_dri.so with its libraries on LD_LIBRARY_PATH), VK_ALL_LIBS=1 (use every library
#   of the kit, also the base ones the machine has).
# Softpipe draws an 800x800 frame in ~95 ms on a CPU: enough for the GL probe, too slow for the bench
# to paint frames while dragging (it reports "no frame painted"): the mesa path is for diagnosis.
# llvmpipe add-on: when .viewerkit-llvm/llvmpipe.tar.xz (env LLVM_KIT: its folder;
#   benchmarks/make_viewerkit_llvm.sh builds it) is there, or was unpacked to $VK/llvm by an earlier call,
#   its swrast_dri.so (the kit's Mesa rebuilt with llvmpipe, LLVM linked in statically) is the Mesa
#   driver (DRI_DIR) for Xvfb and the client, with GALLIUM_DRIVER=llvmpipe and LP_NUM_THREADS = the
#   number of cores (unless set). LLVM=0: ignore it.
# Calls that cannot carry everything at once: the kit is unpacked to $VK (and the add-on to
#   $VK/llvm) and reused by a later call on the same machine even when the tarballs are not carried
#   again. UNPACK_ONLY=1 (no arguments needed): unpack what is there and exit.
set -u -o pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
UNPACK_ONLY=${UNPACK_ONLY:-0}
if [ $# -lt 2 ] && [ "$UNPACK_ONLY" != 1 ]; then sed -n '2,32p' "$0"; exit 2; fi
SCENE=${1:-}; OUTDIR=${2:-${OUT:-/tmp}/vk_unpack}; [ $# -ge 2 ] && shift 2
PY=${PYTHON:-python3}
KITDIR=${VIEWERKIT:-$REPO/.viewerkit}
VK=${VK:-/tmp/vk}
GL_MODE=${GL_MODE:-auto}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-300}
PROBE_TIMEOUT=${PROBE_TIMEOUT:-40}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
GLLOG=$OUTDIR/gl.log
: > "$GLLOG"
log() { echo "[gpu_viewer] $*" | tee -a "$GLLOG" >&2; }
XVFB_PID=""; XKB_LINK=""
cleanup() {
  if [ -n "$XVFB_PID" ] && kill -0 "$XVFB_PID" 2>/dev/null; then kill "$XVFB_PID" 2>/dev/null; wait "$XVFB_PID" 2>/dev/null; fi
  if [ -n "$XKB_LINK" ]; then rm -f "$XKB_LINK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ unpack the kit
untar() {  # tar.xz without relying on an xz binary
  if command -v xz >/dev/null 2>&1; then tar -xJf "$1" -C "$2"
  else "$PY" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$1" "$2"; fi
}
kit_complete() { [ -f "$VK/.stamp" ] && [ -x "$VK/bin/Xvfb" ] && [ -f "$VK/site/PyQt6/__init__.py" ] && [ -f "$VK/lib/dri/swrast_dri.so" ]; }
if [ -f "$KITDIR/site.tar.xz" ] && [ -f "$KITDIR/sysroot.tar.xz" ]; then
  stamp=$(cksum "$KITDIR/site.tar.xz" "$KITDIR/sysroot.tar.xz" | awk '{print $1, $2}' | tr '\n' ' ')
  if [ "$(cat "$VK/.stamp" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$VK"; mkdir -p "$VK/site"
    untar "$KITDIR/sysroot.tar.xz" "$VK" && untar "$KITDIR/site.tar.xz" "$VK/site" || { log "unpacking the kit failed"; exit 3; }
    echo "$stamp" > "$VK/.stamp"
    log "kit unpacked to $VK"
  else
    log "kit already unpacked in $VK (same tarballs)"
  fi
elif kit_complete; then
  log "no kit tarballs in $KITDIR: using the kit unpacked earlier in $VK"
else
  log "missing $KITDIR/site.tar.xz or sysroot.tar.xz and no complete kit in $VK: build it with benchmarks/make_viewerkit.sh and carry .viewerkit"
  exit 3
fi
# the llvmpipe add-on (benchmarks/make_viewerkit_llvm.sh), unpacked to $VK/llvm
LLVM_KIT=${LLVM_KIT:-$REPO/.viewerkit-llvm}
LLVM_DIR=""
if [ "${LLVM:-1}" != 0 ]; then
  if [ -f "$LLVM_KIT/llvmpipe.tar.xz" ]; then
    lstamp=$(cksum "$LLVM_KIT/llvmpipe.tar.xz" | awk '{print $1, $2}')
    if [ "$(cat "$VK/llvm/.stamp" 2>/dev/null)" != "$lstamp" ]; then
      rm -rf "$VK/llvm"; mkdir -p "$VK/llvm"
      untar "$LLVM_KIT/llvmpipe.tar.xz" "$VK/llvm" || { log "unpacking the llvmpipe add-on failed"; exit 3; }
      echo "$lstamp" > "$VK/llvm/.stamp"
      log "llvmpipe add-on unpacked to $VK/llvm"
    fi
  fi
  if [ -f "$VK/llvm/.stamp" ] && [ -f "$VK/llvm/dri/swrast_dri.so" ]; then
    LLVM_DIR=$VK/llvm
    log "llvmpipe add-on: $LLVM_DIR ($(cat "$LLVM_DIR/VERSION" 2>/dev/null))"
  fi
fi
if [ "$UNPACK_ONLY" = 1 ]; then
  log "UNPACK_ONLY: kit in $VK ($(du -sh "$VK" 2>/dev/null | cut -f1)), llvmpipe add-on: ${LLVM_DIR:-none}"
  exit 0
fi

# ------------------------------------------------------------------ libraries
# lib/: always ours; lib/compat/: base libraries, ours only where the machine has none
LDCONFIG=$(command -v ldconfig || echo /sbin/ldconfig)
LDCACHE=$("$LDCONFIG" -p 2>/dev/null)   # once: `ldconfig -p | grep -q` fails under pipefail (SIGPIPE)
have_lib() { grep -q "^[[:space:]]$1 (libc6,x86-64)" <<<"$LDCACHE"; }
rm -rf "$VK/lib/use"; mkdir -p "$VK/lib/use"
for f in "$VK"/lib/compat/*; do
  so=$(basename "$f")
  if [ "${VK_ALL_LIBS:-0}" = 1 ] || ! have_lib "$so"; then ln -s "$f" "$VK/lib/use/$so"; fi
done
log "base libraries taken from the kit (missing here): $(ls "$VK/lib/use" | tr '\n' ' ')"
# NVIDIA's GLX/EGL vendor libraries (driver mount, usually /usr/local/nvidia/lib64)
NVDIR=""
if [ "$GL_MODE" = mesa ]; then log "GL_MODE=mesa: NVIDIA GL libraries not looked for"; else
for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/local/nvidia; do
  if ls "$d"/libGLX_nvidia.so* >/dev/null 2>&1; then NVDIR=$d; break; fi
done
if [ -z "$NVDIR" ]; then
  p=$(sed -n 's/.*libGLX_nvidia.so.0 (libc6,x86-64) => //p' <<<"$LDCACHE" | head -1)
  [ -n "$p" ] || p=$(find /usr/local/nvidia /usr/lib /usr/lib64 -maxdepth 4 -name 'libGLX_nvidia.so*' 2>/dev/null | head -1)
  [ -n "$p" ] && NVDIR=$(dirname "$p")
fi
mkdir -p "$VK/lib/nv"
if [ -n "$NVDIR" ]; then
  for base in libGLX_nvidia libEGL_nvidia; do   # the .so.0 names glvnd dlopens, if the mount lacks them
    [ -e "$NVDIR/$base.so.0" ] && continue
    real=$(ls "$NVDIR/$base".so.[0-9]*.* 2>/dev/null | head -1)
    [ -n "$real" ] && ln -sf "$real" "$VK/lib/nv/$base.so.0"
  done
  log "NVIDIA GL libraries: $NVDIR ($(ls "$NVDIR" | grep -cE 'GLX_nvidia|EGL_nvidia|glcore') GL files)"
else
  log "no libGLX_nvidia.so found (looked in /usr/local/nvidia, /usr/lib*, ldconfig)"
fi
fi
EGL_JSON=""
for j in /usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json /usr/share/glvnd/egl_vendor.d/10_nvidia.json \
         /etc/glvnd/egl_vendor.d/10_nvidia.json; do
  [ -f "$j" ] && { EGL_JSON=$j; break; }
done
if [ -z "$EGL_JSON" ] && [ -n "$NVDIR" ]; then   # write one
  EGL_JSON=$VK/10_nvidia.json
  printf '{"file_format_version":"1.0.0","ICD":{"library_path":"libEGL_nvidia.so.0"}}\n' > "$EGL_JSON"
fi
EGL_EXT_DIRS=$(find /usr/local/nvidia /usr/share /etc -maxdepth 4 -type d -name egl_external_platform.d 2>/dev/null | tr '\n' ':')
KIT_LD=$VK/lib:$VK/lib/use
if [ -n "$LLVM_DIR" ] && [ -z "${DRI_DIR:-}" ]; then
  DRI_DIR=$LLVM_DIR/dri
  [ -d "$LLVM_DIR/lib" ] && KIT_LD=$LLVM_DIR/lib:$KIT_LD
  export GALLIUM_DRIVER=${GALLIUM_DRIVER:-llvmpipe}
  export LP_NUM_THREADS=${LP_NUM_THREADS:-$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN)}
  log "Mesa driver: llvmpipe from the add-on, LP_NUM_THREADS=$LP_NUM_THREADS"
fi
export LIBGL_DRIVERS_PATH=${DRI_DIR:-$VK/lib/dri}   # Xvfb's GLX and Mesa's client find swrast_dri.so here
export XDG_RUNTIME_DIR=$VK/run; mkdir -p "$XDG_RUNTIME_DIR"; chmod 700 "$XDG_RUNTIME_DIR"
mkdir -p "$VK/etc" "$VK/fccache"
cat > "$VK/etc/fonts.conf" <<EOF
<?xml version="1.0"?>
<!DOCTYPE fontconfig SYSTEM "urn:fontconfig:fonts.dtd">
<fontconfig><dir>$VK/share/fonts</dir><cachedir>$VK/fccache</cachedir>
<alias><family>monospace</family><prefer><family>DejaVu Sans Mono</family></prefer></alias>
<alias><family>sans-serif</family><prefer><family>DejaVu Sans</family></prefer></alias></fontconfig>
EOF
export FONTCONFIG_FILE=$VK/etc/fonts.conf

# ------------------------------------------------------------------ Xvfb
if [ ! -e /usr/bin/xkbcomp ]; then
  if ln -s "$VK/bin/xkbcomp" /usr/bin/xkbcomp 2>/dev/null; then XKB_LINK=/usr/bin/xkbcomp; log "linked /usr/bin/xkbcomp -> kit"
  else log "WARNING: no /usr/bin/xkbcomp and /usr/bin is not writable: Xvfb's keyboard setup will fail"; fi
fi
N=99
while [ -e "/tmp/.X$N-lock" ] || [ -e "/tmp/.X11-unix/X$N" ]; do N=$((N + 1)); done
LD_LIBRARY_PATH=$KIT_LD${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} "$VK/bin/Xvfb" ":$N" -screen 0 1280x1024x24 \
  -xkbdir "$VK/share/X11/xkb" -fp built-ins -nolisten tcp -noreset +extension GLX >"$OUTDIR/xvfb.log" 2>&1 &
XVFB_PID=$!
for _ in $(seq 200); do
  [ -S "/tmp/.X11-unix/X$N" ] && break
  kill -0 "$XVFB_PID" 2>/dev/null || break
  sleep 0.1
done
if ! kill -0 "$XVFB_PID" 2>/dev/null || [ ! -S "/tmp/.X11-unix/X$N" ]; then
  log "Xvfb did not start; its log:"; cat "$OUTDIR/xvfb.log" | tee -a "$GLLOG" >&2
  log "ldd of the kit's Xvfb:"; LD_LIBRARY_PATH=$KIT_LD ldd "$VK/bin/Xvfb" 2>&1 | tee -a "$GLLOG" >&2
  exit 4
fi
export DISPLAY=:$N
log "Xvfb :$N running (pid $XVFB_PID)"

# ------------------------------------------------------------------ Python environment
export PYTHONPATH=$VK/site:$REPO${PYTHONPATH:+:$PYTHONPATH}
export PYTHONNOUSERSITE=1 PYTHONUNBUFFERED=1 QT_QPA_PLATFORM=xcb
if [ "${VSYNC:-1}" = 0 ]; then export __GL_SYNC_TO_VBLANK=0 vblank_mode=0; fi
cat > "$VK/gl_probe.py" <<'EOF'
"""Open a QOpenGLWidget as the viewer does and print the GL strings it got."""
import os, sys
import PyQt6
from PyQt6.QtCore import QTimer
from PyQt6.QtGui import QSurfaceFormat
from PyQt6.QtWidgets import QApplication
from PyQt6.QtOpenGLWidgets import QOpenGLWidget
from OpenGL import GL
fmt = QSurfaceFormat()
fmt.setVersion(3, 3)
fmt.setProfile(QSurfaceFormat.OpenGLContextProfile.CoreProfile)
fmt.setDepthBufferSize(0)
fmt.setSwapInterval(1)
QSurfaceFormat.setDefaultFormat(fmt)
app = QApplication(sys.argv[:1])
print("probe: QApplication on", app.platformName(), flush=True)
info = {}
class W(QOpenGLWidget):
    def initializeGL(self):
        for k in ("GL_VENDOR", "GL_RENDERER", "GL_VERSION"):
            v = GL.glGetString(getattr(GL, k))
            info[k] = v.decode() if v else "?"
        print("probe: initializeGL", info, flush=True)
    def paintGL(self):
        GL.glClearColor(0.2, 0.4, 0.6, 1.0)
        GL.glClear(GL.GL_COLOR_BUFFER_BIT)
        QTimer.singleShot(100, app.quit)
w = W()
w.resize(128, 128)
w.show()
QTimer.singleShot(20000, app.quit)
app.exec()
px = w.grabFramebuffer().pixelColor(64, 64).getRgb()[:3] if info else None
print(f"PyQt6 from {os.path.dirname(PyQt6.__file__)}; GL_VENDOR={info.get('GL_VENDOR')}; "
      f"GL_RENDERER={info.get('GL_RENDERER')}; GL_VERSION={info.get('GL_VERSION')}; pixel={px}")
sys.exit(0 if info else 2)
EOF

set_mode() {  # exports the environment of one GL path
  unset __GLX_VENDOR_LIBRARY_NAME __EGL_VENDOR_LIBRARY_FILENAMES __EGL_EXTERNAL_PLATFORM_CONFIG_DIRS \
        LIBGL_ALWAYS_SOFTWARE QT_XCB_GL_INTEGRATION PYOPENGL_PLATFORM
  local ld=$KIT_LD
  case $1 in
    nvidia) export __GLX_VENDOR_LIBRARY_NAME=nvidia QT_XCB_GL_INTEGRATION=xcb_glx; ld=$ld:$VK/lib/nv${NVDIR:+:$NVDIR};;
    nvidia-egl) export QT_XCB_GL_INTEGRATION=xcb_egl PYOPENGL_PLATFORM=egl __EGL_VENDOR_LIBRARY_FILENAMES=$EGL_JSON
                [ -n "$EGL_EXT_DIRS" ] && export __EGL_EXTERNAL_PLATFORM_CONFIG_DIRS=${EGL_EXT_DIRS%:}
                ld=$ld:$VK/lib/nv${NVDIR:+:$NVDIR};;
    mesa) export __GLX_VENDOR_LIBRARY_NAME=mesa QT_XCB_GL_INTEGRATION=xcb_glx LIBGL_ALWAYS_SOFTWARE=1;;
  esac
  export LD_LIBRARY_PATH=$ld${BASE_LD:+:$BASE_LD}
}
BASE_LD=${LD_LIBRARY_PATH:-}
diagnose() {
  log "diagnostics for mode $1:"
  { echo "--- QT_DEBUG_PLUGINS=1 probe (last 40 lines)"
    QT_DEBUG_PLUGINS=1 QT_LOGGING_RULES="qt.qpa.gl=true" timeout 30 "$PY" "$VK/gl_probe.py" 2>&1 | tail -40
    echo "--- libraries not found (ldd with LD_LIBRARY_PATH=$LD_LIBRARY_PATH)"
    if command -v ldd >/dev/null; then
      for f in "$VK"/site/PyQt6/*.abi3.so "$VK"/site/PyQt6/Qt6/plugins/*/*.so "$VK"/lib/*.so* "${DRI_DIR:-$VK/lib/dri}"/*.so \
               ${NVDIR:+"$NVDIR"/libGLX_nvidia.so*}; do
        m=$(ldd "$f" 2>&1 | grep 'not found'); [ -n "$m" ] && echo "$f: $m"
      done
    else echo "(no ldd here)"; fi
    if [ "${1#nvidia}" != "$1" ]; then
      echo "--- NVIDIA libraries ($NVDIR)"; ls -la "$NVDIR" 2>&1 | grep -iE 'GLX|EGL|glcore|tls|glsi|egl-' | head -30
      echo "--- dlopen of NVIDIA's GLX/EGL vendor libraries"
      "$PY" -c 'import ctypes, sys
for n in ("libGLX_nvidia.so.0", "libEGL_nvidia.so.0"):
    try: ctypes.CDLL(n); print(n, "loads")
    except OSError as e: print(n, "FAILS:", e)' 2>&1
      echo "--- EGL json: ${EGL_JSON:-none}; external platforms: ${__EGL_EXTERNAL_PLATFORM_CONFIG_DIRS:-none}"
      nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1 | head -2
    fi
    echo "--- Xvfb log"; cat "$OUTDIR/xvfb.log"; } >> "$GLLOG" 2>&1
}

MODE=""
if [ "$GL_MODE" = auto ]; then CANDIDATES="nvidia nvidia-egl mesa"; else CANDIDATES=$GL_MODE; fi
for m in $CANDIDATES; do
  if [ "${m#nvidia}" != "$m" ] && [ -z "$NVDIR" ] && [ "$GL_MODE" = auto ]; then log "skip $m: no NVIDIA GL libraries"; continue; fi
  set_mode "$m"
  out=$(timeout "$PROBE_TIMEOUT" "$PY" "$VK/gl_probe.py" 2>&1); rc=$?
  echo "--- probe $m (rc $rc)"$'\n'"$out" >> "$GLLOG"
  line=$(echo "$out" | grep '^PyQt6 from' | tail -1)
  log "probe $m: rc $rc ${line:-$(echo "$out" | tail -3 | tr '\n' ' ')}"
  if [ $rc = 0 ] && { [ "${m#nvidia}" = "$m" ] || grep -qi nvidia <<<"$line"; }; then MODE=$m; break; fi
  diagnose "$m"
done
if [ -z "$MODE" ]; then log "no GL path worked; see $GLLOG"; exit 5; fi
set_mode "$MODE"
[ "$MODE" = mesa ] && log "WARNING: software GL (Mesa, CPU$([ -n "$LLVM_DIR" ] && echo ", llvmpipe x $LP_NUM_THREADS threads")): the frame rate is NOT the GPU viewer's"
{ echo "--- environment of the bench (mode $MODE)"
  env | grep -E '^(LD_LIBRARY_PATH|PYTHONPATH|DISPLAY|QT_|__GL|__EGL|LIBGL|PYOPENGL|FONTCONFIG|vblank|GALLIUM|LP_)' | sort
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null; } >> "$GLLOG"

# ------------------------------------------------------------------ the benchmark
log "bench: $PY benchmarks/bench_viewer.py $SCENE --size 800 --seconds 6 $* (timeout ${BENCH_TIMEOUT}s)"
timeout "$BENCH_TIMEOUT" "$PY" benchmarks/bench_viewer.py "$SCENE" --size 800 --seconds 6 "$@" 2>&1 | tee "$OUTDIR/bench.log"
rc=${PIPESTATUS[0]}
if [ "$rc" != 0 ]; then
  log "bench_viewer exited with $rc$([ "$rc" = 124 ] && echo " (timeout ${BENCH_TIMEOUT}s)")"
  diagnose "$MODE"
fi
log "GL mode: $MODE; outputs in $OUTDIR"
exit "$rc"
