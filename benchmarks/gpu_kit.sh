#!/usr/bin/env bash
# Builds the kit that benchmarks/gpu_check.sh needs on a lent GPU machine with no network (Python 3.12, torch,
# numpy, h5py, click, tqdm, pybind11, ninja, requests, sympy preinstalled), under the git-ignored folder .gpu/:
#
#   .gpu/spconv-cp312.tar.xz   spconv-cu124 2.3.8 and cumm-cu124 0.7.11 (spconv 2.3.8 needs cumm < 0.8), both
#                              unpacked from their cp312 wheels and packed with xz -9e (each bundles its CUDA 12.4
#                              runtime and nvrtc, so the 98 MB of wheels become a ~39 MB archive)
#   .gpu/wheels/*.whl          the small wheels they and the package need that the image may lack; gpu_check.sh
#                              unpacks one only when its modules are not importable there
#   .gpu/MANIFEST              sizes and sha256 of everything above
#
#     bash benchmarks/gpu_kit.sh            # needs pip with access to PyPI, unzip, xz
#
# The kit, the repository's tracked files and a carried teacher checkpoint (if any) must fit the 64 MiB working
# tree that travels to the device machine; the script prints the total.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KIT=${KIT:-$REPO/.gpu}
PYTHON=${PYTHON:-python3}
SPCONV=(spconv-cu124==2.3.8 cumm-cu124==0.7.11)
# spconv's and cumm's pure-Python dependencies, zarr's tree, PyYAML (params files) and Pillow (PNGs; torchvision
# usually brings it): pinned for a reproducible kit.
WHEELS=(
    ccimport==0.4.4 pccm==0.4.16 fire==0.7.1 lark==1.3.1 termcolor==3.3.0 portalocker==4.4.2
    zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0 packaging==26.4
    typing_extensions==4.16.0 pyyaml==6.0.4 pillow==13.0.0
)

download() {
    local dest=$1
    shift
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$dest" "$@"
}

mkdir -p "$KIT"
rm -rf "$KIT/wheels" "$KIT/build"
mkdir -p "$KIT/downloads" "$KIT/wheels" "$KIT/build/site"
download "$KIT/downloads" "${SPCONV[@]}"
download "$KIT/wheels" "${WHEELS[@]}"

for wheel in "$KIT"/downloads/spconv_cu124-2.3.8-*.whl "$KIT"/downloads/cumm_cu124-0.7.11-*.whl; do
    unzip -q -o "$wheel" -d "$KIT/build/site"
done
for package in spconv cumm; do
    [[ -f "$KIT/build/site/$package/__init__.py" ]] || { echo "no $package/ package in the wheels" >&2; exit 1; }
done
(cd "$KIT/build/site" && LC_ALL=C ls -1 | tar --sort=name --owner=0 --group=0 --numeric-owner \
    --mtime=@0 -cf - -T -) | xz -9e -T1 > "$KIT/spconv-cp312.tar.xz.tmp"
mv "$KIT/spconv-cp312.tar.xz.tmp" "$KIT/spconv-cp312.tar.xz"
rm -rf "$KIT/build" "$KIT/downloads"  # only the archive and the small wheels travel

{
    echo "# built by benchmarks/gpu_kit.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    (cd "$KIT" && for f in spconv-cp312.tar.xz wheels/*.whl; do
        echo "$(sha256sum "$f" | cut -d' ' -f1) $(stat -c %s "$f") $f"
    done)
} > "$KIT/MANIFEST"

# The archive's extension modules must load under CPython 3.12 (no torch or GPU needed), when one is here.
PY312=${PY312:-python3.12}
if "$PY312" -c "" 2> /dev/null; then
    check_site=$(mktemp -d)
    PYTHONPATH= "$PY312" "$REPO/benchmarks/gpu_site.py" --kit "$KIT" --site "$check_site" --check | grep -E "^(unpacked|loaded) "
    rm -rf "$check_site"
else
    echo "no CPython 3.12 ($PY312) here: the archive's extension modules were not loaded"
fi

tracked=$(cd "$REPO" && git ls-files -z | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s}')
archive=$(stat -c %s "$KIT/spconv-cp312.tar.xz")
wheels=$(cat "$KIT"/wheels/*.whl | wc -c)
echo "archive $((archive / 1024)) KiB, wheels $((wheels / 1024)) KiB, tracked files $((tracked / 1024)) KiB:" \
    "$(((archive + wheels + tracked) / 1024)) KiB of the 65536 KiB travelling tree (plus any carried checkpoint)"
