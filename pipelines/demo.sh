#!/usr/bin/env bash
# The demo job on the sample archive shipped in tests/data: inventory, aligned S1+S2 and
# S2+DEM stacks with quicklooks, the patch index, a layout and its tuple counts, and a
# small training dataset with a preview, a tiny model trained on it and compared with gap
# filling, then the Belgian time series reconstructed date by date by gap filling and by
# that model (COGs, quality layers, quicklooks, summaries) and a monthly synthesis, all
# under demo_output/. Rerunning it replaces its stacks and preview (--overwrite is
# explicit) and resumes the rest.
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
echo "== Patch index of the sample archive (16 px patches: the sample is 1 km wide) =="
if [ -f "$OUT/catalog/catalog.sqlite" ]; then
  decloud index add --archive "$ARCHIVE" --catalog "$OUT/catalog"
else
  decloud index build --archive "$ARCHIVE" --catalog "$OUT/catalog" --patch-size 16
fi
decloud index info "$OUT/catalog"

echo
echo "== A shipped acquisition layout and its tuples in the sample =="
decloud layout show acquisition_layouts/os2-occitanie.yaml
decloud layout count acquisition_layouts/os2-occitanie.yaml --catalog "$OUT/catalog"

echo
echo "== A small OS2 training dataset of the Belgian S1+S2 series (tile T31UFS) =="
decloud layout count pipelines/demo-os2-belgium.yaml --catalog "$OUT/catalog" --tile T31UFS
# Rerunning with the same plan resumes, or does nothing when the dataset is complete.
decloud dataset create --catalog "$OUT/catalog" --layout pipelines/demo-os2-belgium.yaml \
  --tile T31UFS --samples 48 --seed 0 --split train=0.75 --split valid=0.25 \
  --split-block 1 --split-buffer 0 --patch-size 32 --bands10 B04,B08 --bands20 B11 \
  --out "$OUT/dataset_os2" --quiet
decloud dataset info "$OUT/dataset_os2"
decloud dataset preview "$OUT/dataset_os2" "$OUT/dataset_os2_preview.png" --n 6 --overwrite

echo
echo "== Train a tiny OS2 U-Net on it for a few epochs, compare with gap filling =="
# A sanity check on 36 tiny samples, not a claim of accuracy. Rerunning resumes.
decloud models list
decloud train --model pipelines/demo-msop-tiny.yaml --dataset "$OUT/dataset_os2" \
  --out "$OUT/model_msop_tiny" --epochs 30 --seed 0 --quiet
decloud models evaluate "$OUT/model_msop_tiny/model.keras" pipelines/demo-gapfill.yaml \
  --dataset "$OUT/dataset_os2" --split valid

echo
echo "== Time series of T31UFS (April 2023) by gap filling on a 2-worker Dask LocalCluster =="
# One task per date on two worker processes: COG, quality, quicklook and STAC item per
# date, then the STAC collection of the series (collection.json), written by the client.
# Resumable: a rerun skips every date whose completion record matches (see summary.md).
decloud process series --job pipelines/series-belgium-gapfill.yaml --archive "$ARCHIVE" \
  --out "$OUT/processed/series_gapfill" --workers 2
cat "$OUT/processed/series_gapfill/summary.md"
echo "STAC: $OUT/processed/series_gapfill/collection.json and" \
  "$(ls "$OUT"/processed/series_gapfill/*.stac.json | wc -l) items next to the COGs"

echo
echo "== The same series through the tiny trained model (t-1 and t+1 chosen per block) =="
# The first and last dates have no neighbour on one side in the demo layout: they are
# recorded as failed, with the reason, and the series goes on.
decloud process series --job pipelines/series-belgium-msop-tiny.yaml --archive "$ARCHIVE" \
  --method "$OUT/model_msop_tiny/model.keras" --catalog "$OUT/catalog" \
  --out "$OUT/processed/series_msop_tiny"
cat "$OUT/processed/series_msop_tiny/summary.md"

echo
echo "== Monthly synthesis of April 2023 by gap filling (mid-month target) =="
decloud process monthly --job pipelines/monthly-belgium-gapfill.yaml --archive "$ARCHIVE" \
  --out "$OUT/processed/monthly_gapfill"

echo
echo "Series quicklooks (input | output | quality): $OUT/processed/*/*_quicklook.png"
last_preview=$(ls "$OUT"/model_msop_tiny/previews/*.png | tail -n 1)
echo "Quicklooks and previews: $(ls "$OUT"/*/*.png "$OUT"/*.png | tr '\n' ' ')$last_preview"

echo
echo "== Quality benchmark: real csmask clouds cut into the clear Slovenian 2015-08-30 =="
# Nearest date, per-pixel and patch-level gap filling (raw and composite), scored against
# the withheld truth per cloud-cover bucket; an HTML report. Redone on every run (seconds).
decloud benchmark quality --archive "$ARCHIVE" --tile T33TVM --reference 2015-08-30 \
  --no-archive-cuts --csmask tests/data/csmask_cloudy.npz --csmask-count 2 \
  --out "$OUT/benchmark_quality"
