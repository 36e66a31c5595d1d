#!/usr/bin/env bash
# Build .viewerkit/: everything a bare GPU machine (no network, no X11/GL userspace, a Python with
# torch/numpy/safetensors) lacks to run the real viewer under Xvfb, for benchmarks/gpu_viewer.sh.
#
# usage: bash benchmarks/make_viewerkit.sh            (on Debian 12 amd64, as root, with network: apt
#                                                   and pip; ~5 min on 2 cores the first time because
#                                                   it builds Mesa, ~1.5 min after that)
# Writes (ignored by the repository's .gitignore):
#   .viewerkit/site.tar.xz     Python packages, unpacked to one folder put first on PYTHONPATH:
#                              PyQt6 trimmed to QtCore/Gui/Widgets/OpenGL/OpenGLWidgets/Test/Svg + sip
#                              for cp311 and cp312 + uic, the Qt6 libs they need (ICU included), the xcb
#                              platform plugin and both xcb GL integrations; PyOpenGL, pyrr,
#                              multipledispatch (pure wheels). Kits built before 2026-11-22 also hold
#                              pyqtgraph and colorama (the training panel no longer uses them)
#   .viewerkit/sysroot.tar.xz  bin/Xvfb, bin/xkbcomp, share/X11/xkb, two DejaVu fonts, and the shared
#                              libraries they and Qt's xcb plugin need, from Debian 12 packages, in
#                              lib/ (always used) and lib/compat/ (base libraries: linked in by
#                              gpu_viewer.sh only when the machine lacks them). lib/libGLX_mesa.so.0,
#                              lib/libglapi.so.0 and lib/dri/swrast_dri.so are Mesa 22.3.6 (Debian's
#                              source) built here WITHOUT LLVM (softpipe): Xvfb needs swrast_dri.so for
#                              its GLX extension at all, and Debian's build drags in 150 MB of LLVM.
#   .viewerkit/MANIFEST.txt    package versions, file list, sizes, sha256
# Env: PYTHON (default .venv/bin/python: the PyQt6 to trim, and pip for the wheels), WORK (scratch,
#      default /tmp/viewerkit-build; the Mesa build is cached there), MESA_JOBS (default nproc).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PYTHON:-.venv/bin/python}
WORK=${WORK:-/tmp/viewerkit-build}
KIT=$REPO/.viewerkit
ARCH=x86_64-linux-gnu
[ "$(dpkg --print-architecture)" = amd64 ] || { echo "needs a Debian 12 amd64 machine" >&2; exit 1; }
mkdir -p "$WORK"

# ---------------------------------------------------------------- Mesa without LLVM (cached)
MESA=$WORK/mesa-install
if [ ! -f "$MESA/usr/lib/$ARCH/dri/swrast_dri.so" ]; then
  echo "== building Mesa (softpipe only, no LLVM)"
  mkdir -p "$WORK/srclists/partial" "$WORK/mesasrc"
  echo "deb-src http://deb.debian.org/debian bookworm main" > "$WORK/src.list"
  o=(-o "Dir::Etc::SourceList=$WORK/src.list" -o Dir::Etc::SourceParts=/nonexistent -o "Dir::State::Lists=$WORK/srclists")
  apt-get "${o[@]}" update -qq
  (cd "$WORK/mesasrc" && rm -rf mesa && apt-get "${o[@]}" source -qq --download-only mesa=22.3.6-1+deb12u2 \
     && dpkg-source -x mesa_22.3.6-1+deb12u2.dsc mesa >/dev/null)
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends meson ninja-build bison flex \
    python3-mako pkg-config gcc g++ libx11-dev libxext-dev libxfixes-dev libxcb-glx0-dev libx11-xcb-dev \
    libxxf86vm-dev libexpat1-dev zlib1g-dev libdrm-dev libxshmfence-dev libxrandr-dev libglvnd-dev \
    libxcb-dri2-0-dev libxcb-dri3-dev libxcb-present-dev libxcb-sync-dev libxcb-shm0-dev \
    libxcb-xfixes0-dev libxcb-randr0-dev >/dev/null
  rm -rf "$WORK/mesabuild" "$MESA"
  (cd "$WORK/mesasrc/mesa" && PATH=/usr/bin:/bin:$PATH meson setup "$WORK/mesabuild" --prefix=/usr \
     --libdir=lib/$ARCH --buildtype=release -Db_ndebug=true -Dstrip=true -Dplatforms=x11 \
     -Dgallium-drivers=swrast -Dvulkan-drivers= -Dllvm=disabled -Dglx=dri -Degl=disabled -Dgbm=disabled \
     -Dgles1=disabled -Dgles2=disabled -Dopengl=true -Dglvnd=true -Dshared-glapi=enabled -Ddri3=disabled \
     -Dgallium-vdpau=disabled -Dgallium-va=disabled -Dgallium-xa=disabled -Dgallium-nine=false \
     -Dgallium-opencl=disabled -Dgallium-omx=disabled -Dlmsensors=disabled -Dzstd=disabled \
     -Dvalgrind=disabled -Dlibunwind=disabled -Dbuild-tests=false -Dxlib-lease=disabled -Dosmesa=false >/dev/null)
  PATH=/usr/bin:/bin:$PATH ninja -C "$WORK/mesabuild" -j "${MESA_JOBS:-$(nproc)}" >"$WORK/mesa-build.log"
  PATH=/usr/bin:/bin:$PATH DESTDIR=$MESA ninja -C "$WORK/mesabuild" install >>"$WORK/mesa-build.log"
fi

# ---------------------------------------------------------------- Python site (PyQt6 trimmed + wheels)
echo "== Python site"
SITE=$WORK/site
rm -rf "$SITE" && mkdir -p "$SITE/PyQt6/Qt6/lib" "$SITE/PyQt6/Qt6/plugins"
QSRC=$("$PY" -c 'import os, PyQt6; print(os.path.dirname(PyQt6.__file__))')
PYQT_VER=$("$PY" -c 'from PyQt6.QtCore import PYQT_VERSION_STR, qVersion; print(PYQT_VERSION_STR, qVersion())')
SIP_VER=$("$PY" -m pip show PyQt6-sip 2>/dev/null | sed -n 's/^Version: //p')
MODULES="QtCore QtGui QtWidgets QtOpenGL QtOpenGLWidgets QtTest QtSvg"   # viewer + bench
cp "$QSRC/__init__.py" "$SITE/PyQt6/"
cp -r "$QSRC/uic" "$SITE/PyQt6/"                                      # pyqtgraph imports PyQt6.uic
find "$SITE/PyQt6/uic" -name __pycache__ -prune -exec rm -rf {} +
cp "$QSRC"/sip.cpython-*.so "$SITE/PyQt6/"                           # the local interpreter's sip
for m in $MODULES; do cp "$QSRC/$m.abi3.so" "$SITE/PyQt6/"; done
PLUGINS="platforms/libqxcb.so xcbglintegrations/libqxcb-glx-integration.so xcbglintegrations/libqxcb-egl-integration.so"
for p in $PLUGINS; do mkdir -p "$SITE/PyQt6/Qt6/plugins/$(dirname $p)"; cp "$QSRC/Qt6/plugins/$p" "$SITE/PyQt6/Qt6/plugins/$p"; done
# the Qt6 libs: closure of DT_NEEDED inside Qt6/lib
needed() { readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'; }
todo=("$SITE"/PyQt6/*.abi3.so "$SITE"/PyQt6/Qt6/plugins/*/*.so)
while [ ${#todo[@]} -gt 0 ]; do
  f=${todo[0]}; todo=("${todo[@]:1}")
  for so in $(needed "$f"); do
    if [ -e "$QSRC/Qt6/lib/$so" ] && [ ! -e "$SITE/PyQt6/Qt6/lib/$so" ]; then
      cp "$QSRC/Qt6/lib/$so" "$SITE/PyQt6/Qt6/lib/"; todo+=("$SITE/PyQt6/Qt6/lib/$so")
    fi
  done
done
# wheels: sip for cp312 (the GPU machine's Python), pure-Python deps the GPU machine lacks
WHL=$WORK/wheels; rm -rf "$WHL"; mkdir -p "$WHL"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 -d "$WHL" "PyQt6_sip==$SIP_VER" 2>/dev/null
PURE="PyOpenGL==3.1.10 pyrr==0.10.3 multipledispatch==1.0.0"
"$PY" -m pip download -q --no-deps --only-binary=:all: -d "$WHL" $PURE 2>/dev/null
for w in "$WHL"/*.whl; do "$PY" -m zipfile -e "$w" "$SITE"; done
rm -rf "$SITE"/*.dist-info "$SITE"/PyQt6/bindings
find "$SITE" -name '*.pyi' -delete
find "$SITE" -name __pycache__ -prune -exec rm -rf {} +
rm -rf "$SITE/OpenGL/DLLS"                                              # Windows only
strip --strip-unneeded "$SITE"/PyQt6/*.so                               # PyQt6's modules ship unstripped

# ---------------------------------------------------------------- system files from Debian packages
echo "== Debian packages"
ROOT=$WORK/root; DEBS=$WORK/debs; SYS=$WORK/sysroot
rm -rf "$ROOT" "$DEBS" "$SYS"; mkdir -p "$ROOT" "$DEBS" "$SYS/bin" "$SYS/lib/compat" "$SYS/lib/dri" "$SYS/share/fonts"
# shared libraries needed by Qt (kit copy), Xvfb, xkbcomp and the Mesa build: the DT_NEEDED closure,
# resolved against this machine's /usr/lib (hence the install below), mapped to packages by dpkg -S,
# then downloaded and unpacked (nothing of the running system is copied)
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends xvfb x11-xkb-utils xkb-data \
  fonts-dejavu-core libegl1 libopengl0 libgl1 libglx0 libglvnd0 libxcb-cursor0 libxcb-icccm4 libxcb-image0 \
  libxcb-keysyms1 libxcb-render-util0 libxcb-shape0 libxcb-xkb1 libxkbcommon-x11-0 libfontconfig1 \
  libdbus-1-3 libglib2.0-0 >/dev/null
SKIP=" libc.so.6 libm.so.6 libdl.so.2 libpthread.so.0 librt.so.1 ld-linux-x86-64.so.2 libstdc++.so.6 libgcc_s.so.1 libGLX_mesa.so.0 libglapi.so.0 "
declare -A LIBS=()
todo=("$SITE"/PyQt6/Qt6/lib/*.so.* "$SITE"/PyQt6/Qt6/plugins/*/*.so /usr/bin/Xvfb /usr/bin/xkbcomp
      "$MESA/usr/lib/$ARCH/libGLX_mesa.so.0" "$MESA/usr/lib/$ARCH/dri/swrast_dri.so")
# loaded by name at run time: libOpenGL (PyOpenGL's ctypes), libEGL (Qt's xcb_egl integration)
for so in libOpenGL.so.0 libEGL.so.1 libGL.so.1 libGLX.so.0; do
  LIBS[$so]=$(readlink -f "/usr/lib/$ARCH/$so"); todo+=("${LIBS[$so]}")
done
while [ ${#todo[@]} -gt 0 ]; do
  f=${todo[0]}; todo=("${todo[@]:1}")
  for so in $(needed "$f"); do
    case "$SKIP" in *" $so "*) continue;; esac
    [ -e "$SITE/PyQt6/Qt6/lib/$so" ] && continue
    [ -n "${LIBS[$so]:-}" ] && continue
    p=$(readlink -f "/usr/lib/$ARCH/$so" 2>/dev/null || true)
    [ -e "$p" ] || { echo "missing on this machine: $so (needed by $f)" >&2; exit 1; }
    LIBS[$so]=$p; todo+=("$p")
  done
done
PKGS="xvfb x11-xkb-utils xkb-data xserver-common fonts-dejavu-core libegl1 libopengl0"
for so in "${!LIBS[@]}"; do
  p=${LIBS[$so]}
  pkg=$(dpkg -S "$p" 2>/dev/null || dpkg -S "${p#/usr}" 2>/dev/null || true)
  [ -n "$pkg" ] || { echo "no package owns $p" >&2; exit 1; }
  PKGS="$PKGS ${pkg%%:*}"
done
PKGS=$(echo $PKGS | tr ' ' '\n' | sort -u | tr '\n' ' ')
(cd "$DEBS" && apt-get download -qq $PKGS 2>/dev/null || { apt-get update -qq && apt-get download -qq $PKGS; })
for d in "$DEBS"/*.deb; do dpkg -x "$d" "$ROOT"; done
cp "$ROOT/usr/bin/Xvfb" "$ROOT/usr/bin/xkbcomp" "$SYS/bin/"
mkdir -p "$SYS/share/X11" "$SYS/share/fonts"
cp -r "$ROOT/usr/share/X11/xkb" "$SYS/share/X11/"
cp "$ROOT/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf" "$ROOT/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf" "$SYS/share/fonts/"
mkdir -p "$SYS/lib/xorg"; cp "$ROOT/usr/lib/xorg/protocol.txt" "$SYS/lib/xorg/" 2>/dev/null || true
# base libraries a bare Ubuntu usually has in newer versions: gpu_viewer.sh uses ours only if missing
COMPAT=" libz.so.1 libzstd.so.1 liblzma.so.5 libbz2.so.1.0 libpcre2-8.so.0 libselinux.so.1 libsystemd.so.0 libgcrypt.so.20 libgpg-error.so.0 liblz4.so.1 libcap.so.2 libcap-ng.so.0 libaudit.so.1 libexpat.so.1 libmd.so.0 libbsd.so.0 libffi.so.8 libuuid.so.1 "
for so in "${!LIBS[@]}"; do
  src=""
  for d in "$ROOT/usr/lib/$ARCH" "$ROOT/lib/$ARCH"; do [ -e "$d/$so" ] && { src=$(readlink -f "$d/$so"); break; }; done
  [ -n "$src" ] || { echo "$so not found in the downloaded packages" >&2; exit 1; }
  case "$COMPAT" in *" $so "*) cp "$src" "$SYS/lib/compat/$so";; *) cp "$src" "$SYS/lib/$so";; esac
done
# Qt dlopens the unversioned names (libGLX.so, libOpenGL.so, libEGL.so, libGL.so): without these
# links it loads a second copy of glvnd from the system where one exists (seen here: GLX fails)
for so in libGLX.so.0 libOpenGL.so.0 libEGL.so.1 libGL.so.1; do ln -sf "$so" "$SYS/lib/${so%%.so*}.so"; done
# Mesa (ours)
cp "$(readlink -f "$MESA/usr/lib/$ARCH/libGLX_mesa.so.0")" "$SYS/lib/libGLX_mesa.so.0"
cp "$(readlink -f "$MESA/usr/lib/$ARCH/libglapi.so.0")" "$SYS/lib/libglapi.so.0"
cp "$(readlink -f "$MESA/usr/lib/$ARCH/dri/swrast_dri.so")" "$SYS/lib/dri/swrast_dri.so"

# ---------------------------------------------------------------- pack
echo "== packing"
rm -rf "$KIT"; mkdir -p "$KIT"
tar -C "$SITE" --owner=0 --group=0 -cf - . | xz -9e -T0 > "$KIT/site.tar.xz"
tar -C "$SYS" --owner=0 --group=0 -cf - . | xz -9e -T0 > "$KIT/sysroot.tar.xz"
{
  echo "viewerkit built $(date -u +%FT%TZ) on $(. /etc/os-release; echo $PRETTY_NAME) by benchmarks/make_viewerkit.sh"
  echo "PyQt6 / Qt: $PYQT_VER (from $QSRC), PyQt6-sip $SIP_VER (local + cp312 wheel)"
  echo "wheels: $(cd "$WHL" && ls | tr '\n' ' ')"
  echo "Mesa: 22.3.6-1+deb12u2 source, gallium swrast (softpipe), no LLVM, glvnd"
  echo "Debian packages:"
  for d in "$DEBS"/*.deb; do echo "  $(dpkg-deb -f "$d" Package) $(dpkg-deb -f "$d" Version)"; done
  echo "sizes:"; (cd "$KIT" && ls -l site.tar.xz sysroot.tar.xz | awk '{print "  " $5, $9}')
  echo "sha256:"; (cd "$KIT" && sha256sum site.tar.xz sysroot.tar.xz | sed 's/^/  /')
  echo "site.tar.xz:"; (cd "$SITE" && find . -type f -name '*.so*' | sort | sed 's/^/  /'; ls | sed 's/^/  top: /')
  echo "sysroot.tar.xz:"; (cd "$SYS" && find . -type f -o -type l | grep -v '/xkb/' | sort | sed 's/^/  /'; echo "  ./share/X11/xkb/... ($(find share/X11/xkb -type f | wc -l) files)")
} > "$KIT/MANIFEST.txt"
du -sh "$KIT"/*
