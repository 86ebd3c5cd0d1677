#!/usr/bin/env bash
# The demo job: inventory of the sample archive shipped in tests/data, then aligned
# S1+S2 and S2+DEM stacks with quicklooks under demo_output/. Rerunning it replaces
# its own outputs (--overwrite is explicit).
set -euo pipefail
cd "$(dirname "$0")/.."
ARCHIVE=tests/data/archive
OUT=demo_output

echo "== Inventory of the sample archive ($ARCHIVE) =="
decloud inventory --archive "$ARCHIVE"

echo
echo "== S1 + S2 stack: Ireland, tile T29UPU, 2017-06-17 (SAFE PB 04.00 + S1Tiling) =="
decloud stack --archive "$ARCHIVE" --tile T29UPU --date 2017-06-17 --out "$OUT" --overwrite

echo
echo "== S2 + DEM stack: Slovenia, tile T33TVM, 2015-09-09 (THEIA + DEM in EPSG:4326) =="
decloud stack --archive "$ARCHIVE" --tile T33TVM --date 2015-09-09 --out "$OUT" --overwrite

echo
echo "Quicklooks: $(ls "$OUT"/*/*.png | tr '\n' ' ')"
