#!/usr/bin/env bash
# The test of `tomoloop view` (tests/unit/test_view.py) opens napari in a real window on a
# virtual screen: Xvfb with xvfb-run, Mesa's software OpenGL, and the X libraries that
# Qt 6's xcb platform loads. This makes sure those Debian packages are installed.
set -euo pipefail
PACKAGES=(
  xvfb xauth libgl1 libegl1 libgl1-mesa-dri libfontconfig1 libdbus-1-3 libxkbcommon-x11-0
  libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0
  libxcb-render-util0 libxcb-shape0 libxcb-shm0 libxcb-sync1 libxcb-xfixes0 libxcb-xkb1
)
if ! command -v dpkg-query >/dev/null 2>&1; then
  command -v xvfb-run >/dev/null 2>&1 && exit 0
  echo "xvfb-run is missing: install Xvfb (and xvfb-run) for the napari test" >&2
  exit 1
fi
missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" ||
    missing+=("$package")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
if [[ $(id -u) -ne 0 ]]; then
  echo "A virtual screen for the napari test is missing: install it, e.g." \
       "'sudo apt-get install ${missing[*]}'" >&2
  exit 1
fi
echo "tomoloop: installing a virtual screen for the napari test (${missing[*]})..." >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
  >/dev/null
