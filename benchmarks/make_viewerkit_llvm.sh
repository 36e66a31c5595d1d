#!/usr/bin/env bash
# Build .viewerkit-llvm/: an llvmpipe add-on to .viewerkit (carried separately: a device call carries
# at most 64 MiB, and the kit plus the repo already take most of that). benchmarks/gpu_viewer.sh uses it
# as the Mesa driver (DRI_DIR) when it is there or was unpacked to $VK/llvm by an earlier call.
#
# usage: bash benchmarks/make_viewerkit_llvm.sh   (Debian 12 amd64, as root, with network: apt; after
#                                               benchmarks/make_viewerkit.sh; ~15 min on 2 cores)
# What it is: the kit's own Mesa (Debian's 22.3.6-1+deb12u2 source, same meson options: glvnd,
# shared glapi, gallium swrast only, no EGL/GBM/GLES) rebuilt with -Dllvm=enabled -Dshared-llvm=disabled,
# so swrast_dri.so holds llvmpipe (and softpipe) with the LLVM components it uses linked in
# statically from Debian's llvm-$LLVM_VER-dev. Debian's own libgl1-mesa-dri is the wrong thing to carry:
# its swrast_dri.so is the megadriver (radeonsi, iris, nouveau, zink...) and needs libLLVM-15 (~100 MB),
# libz3, libxml2 + ICU, libsensors, libdrm_*, libelf: far over the size limit once compressed.
# The add-on's swrast_dri.so talks to the kit's libGLX_mesa.so.0 / libglapi.so.0 (same source and
# options; this script checks that the rebuilt ones export the same symbols) and to Xvfb's GLX.
# Writes (ignored by the repository's .gitignore):
#   .viewerkit-llvm/llvmpipe.tar.xz   dri/swrast_dri.so, VERSION, lib/ (shared libraries it needs
#                                     beyond the kit and glibc: none expected)
#   .viewerkit-llvm/MANIFEST.txt
# Env: WORK (default /tmp/viewerkit-build, shared with make_viewerkit.sh), MESA_JOBS (default nproc),
#      LLVM_VER (14: Debian 12's default LLVM; 15 also works, apt installs llvm-$LLVM_VER-dev).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=${WORK:-/tmp/viewerkit-build}
LLVM_VER=${LLVM_VER:-14}
OUTK=$REPO/.viewerkit-llvm
ARCH=x86_64-linux-gnu
MESA_VER=22.3.6-1+deb12u2
[ "$(dpkg --print-architecture)" = amd64 ] || { echo "needs a Debian 12 amd64 machine" >&2; exit 1; }
[ -d "$REPO/.viewerkit" ] || echo "note: no .viewerkit/ here (the add-on only works with it)" >&2
mkdir -p "$WORK"

# ---------------------------------------------------------------- Mesa source (as make_viewerkit.sh)
if [ ! -f "$WORK/mesasrc/mesa/meson.build" ]; then
  mkdir -p "$WORK/srclists/partial" "$WORK/mesasrc"
  echo "deb-src http://deb.debian.org/debian bookworm main" > "$WORK/src.list"
  o=(-o "Dir::Etc::SourceList=$WORK/src.list" -o Dir::Etc::SourceParts=/nonexistent -o "Dir::State::Lists=$WORK/srclists")
  apt-get "${o[@]}" update -qq
  (cd "$WORK/mesasrc" && rm -rf mesa && apt-get "${o[@]}" source -qq --download-only "mesa=$MESA_VER" \
     && dpkg-source -x "mesa_$MESA_VER.dsc" mesa >/dev/null)
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends meson ninja-build bison flex \
  python3-mako pkg-config gcc g++ libx11-dev libxext-dev libxfixes-dev libxcb-glx0-dev libx11-xcb-dev \
  libxxf86vm-dev libexpat1-dev zlib1g-dev libdrm-dev libxshmfence-dev libxrandr-dev libglvnd-dev \
  libxcb-dri2-0-dev libxcb-dri3-dev libxcb-present-dev libxcb-sync-dev libxcb-shm0-dev \
  libxcb-xfixes0-dev libxcb-randr0-dev "llvm-$LLVM_VER-dev" "libpolly-$LLVM_VER-dev" >/dev/null   # LLVM's cmake exports name libPolly.a

# ---------------------------------------------------------------- Mesa with llvmpipe (cached)
MESA=$WORK/mesa-llvm$LLVM_VER-install
B=$WORK/mesabuild-llvm$LLVM_VER
if [ ! -f "$MESA/usr/lib/$ARCH/dri/swrast_dri.so" ]; then
  echo "== building Mesa (gallium swrast with llvmpipe, LLVM $LLVM_VER static)"
  rm -rf "$B" "$MESA"
  (cd "$WORK/mesasrc/mesa" && PATH=/usr/bin:/bin:$PATH meson setup "$B" -Dcmake_prefix_path=/usr/lib/llvm-$LLVM_VER \
     --prefix=/usr --libdir=lib/$ARCH --buildtype=release -Db_ndebug=true -Dstrip=true -Dplatforms=x11 \
     -Dgallium-drivers=swrast -Dvulkan-drivers= -Dllvm=enabled -Dshared-llvm=disabled -Dglx=dri -Degl=disabled \
     -Dgbm=disabled -Dgles1=disabled -Dgles2=disabled -Dopengl=true -Dglvnd=true -Dshared-glapi=enabled \
     -Ddri3=disabled -Dgallium-vdpau=disabled -Dgallium-va=disabled -Dgallium-xa=disabled -Dgallium-nine=false \
     -Dgallium-opencl=disabled -Dgallium-omx=disabled -Dlmsensors=disabled -Dzstd=disabled \
     -Dvalgrind=disabled -Dlibunwind=disabled -Dbuild-tests=false -Dxlib-lease=disabled -Dosmesa=false >/dev/null)
  PATH=/usr/bin:/bin:$PATH ninja -C "$B" -j "${MESA_JOBS:-$(nproc)}" >"$WORK/mesa-llvm-build.log"
  PATH=/usr/bin:/bin:$PATH DESTDIR=$MESA ninja -C "$B" install >>"$WORK/mesa-llvm-build.log"
fi
DRI=$(readlink -f "$MESA/usr/lib/$ARCH/dri/swrast_dri.so")

# ---------------------------------------------------------------- checks
# the kit's GLX/glapi vs the ones built with the driver: same exported symbols (same DRI/glapi ABI)
KITSYS=$(mktemp -d); trap 'rm -rf "$KITSYS"' EXIT
if [ -f "$REPO/.viewerkit/sysroot.tar.xz" ]; then
  tar -xJf "$REPO/.viewerkit/sysroot.tar.xz" -C "$KITSYS" ./lib/libglapi.so.0 ./lib/libGLX_mesa.so.0
  for so in libglapi.so.0 libGLX_mesa.so.0; do
    if ! diff <(nm -D --defined-only "$KITSYS/lib/$so" | awk '{print $3}' | sort) \
              <(nm -D --defined-only "$(readlink -f "$MESA/usr/lib/$ARCH/$so")" | awk '{print $3}' | sort) >/dev/null; then
      echo "the kit's $so exports other symbols than the one built with llvmpipe: rebuild the kit" >&2; exit 1
    fi
  done
  # every glapi symbol the driver imports is in the kit's libglapi
  miss=$(comm -23 <(nm -D --undefined-only "$DRI" | awk '{print $2}' | grep -E '^_?glapi' | sort -u) \
                  <(nm -D --defined-only "$KITSYS/lib/libglapi.so.0" | awk '{print $3}' | sort -u))
  [ -z "$miss" ] || { echo "kit libglapi lacks: $miss" >&2; exit 1; }
fi
# NEEDED beyond glibc/libstdc++ and the kit's libraries
KITLIBS=$( (tar -tJf "$REPO/.viewerkit/sysroot.tar.xz" 2>/dev/null || true) | sed -n 's#^\./lib/\(compat/\)\{0,1\}\([^/]*\.so[^/]*\)$#\2#p')
BASE="libc.so.6 libm.so.6 libdl.so.2 libpthread.so.0 librt.so.1 ld-linux-x86-64.so.2 libstdc++.so.6 libgcc_s.so.1 libtinfo.so.6"   # libtinfo: bash links it
EXTRA=""
for so in $(readelf -d "$DRI" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
  case " $BASE $(echo $KITLIBS) " in *" $so "*) ;; *) EXTRA="$EXTRA $so";; esac
done

# ---------------------------------------------------------------- stage + pack
STAGE=$WORK/llvm-stage; rm -rf "$STAGE"; mkdir -p "$STAGE/dri" "$STAGE/lib"
cp "$DRI" "$STAGE/dri/swrast_dri.so"
strip --strip-unneeded "$STAGE/dri/swrast_dri.so"
for so in $EXTRA; do   # not expected; copied from Debian's package of the library found here
  p=$(readlink -f "/usr/lib/$ARCH/$so"); pkg=$(dpkg -S "$p" 2>/dev/null | head -1 | cut -d: -f1)
  echo "extra library: $so ($pkg)"
  (cd "$WORK" && rm -rf xdeb && mkdir xdeb && cd xdeb && apt-get download -qq "$pkg" && dpkg -x ./*.deb root)
  cp "$(readlink -f "$WORK/xdeb/root/usr/lib/$ARCH/$so" 2>/dev/null || readlink -f "$WORK/xdeb/root/lib/$ARCH/$so")" "$STAGE/lib/$so"
  strip --strip-unneeded "$STAGE/lib/$so"
done
rmdir "$STAGE/lib" 2>/dev/null || true
echo "Mesa $MESA_VER (Debian source) gallium swrast: llvmpipe + softpipe, LLVM $(llvm-config-$LLVM_VER --version) static" > "$STAGE/VERSION"
rm -rf "$OUTK"; mkdir -p "$OUTK"
tar -C "$STAGE" --owner=0 --group=0 -cf - . | xz -9e -T1 > "$OUTK/llvmpipe.tar.xz"
{
  echo "viewerkit-llvm built $(date -u +%FT%TZ) on $(. /etc/os-release; echo $PRETTY_NAME) by benchmarks/make_viewerkit_llvm.sh"
  cat "$STAGE/VERSION"
  echo "swrast_dri.so: $(stat -c %s "$STAGE/dri/swrast_dri.so") bytes; NEEDED: $(readelf -d "$STAGE/dri/swrast_dri.so" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')"
  echo "extra libraries carried: ${EXTRA:- none}"
  echo "llvmpipe.tar.xz: $(stat -c %s "$OUTK/llvmpipe.tar.xz") bytes, sha256 $(sha256sum "$OUTK/llvmpipe.tar.xz" | cut -d' ' -f1)"
} > "$OUTK/MANIFEST.txt"
cat "$OUTK/MANIFEST.txt"
