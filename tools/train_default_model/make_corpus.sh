#!/usr/bin/env bash
# Extracts the King James Bible from Debian's bible-kjv package into plain text,
# one verse per line, verse references stripped, split by books:
#   train.txt    Genesis 1:1 – James 5:20     (training: tokenizer and model)
#   val.txt      1 Peter 1:1 – 3 John 1:14   (checkpoint selection during training)
#   heldout.txt  Jude 1:1 – Revelation 22:21 (held-out perplexity, never trained on)
# Usage: tools/train_default_model/make_corpus.sh OUTDIR
# Needs: apt-get install bible-kjv   (the `bible` program; tested with 4.38)
set -euo pipefail
out=${1:?usage: make_corpus.sh OUTDIR}
command -v bible >/dev/null || { echo "needs the bible program: apt-get install bible-kjv" >&2; exit 1; }
mkdir -p "$out"
extract() {  # range file
  # each line is "Ref text"; drop the reference (first word), squeeze double spaces
  bible -f "$1" | sed -e 's/^[^ ]* //' -e 's/  */ /g' -e 's/ *$//' > "$2"
}
extract "Gen1:1-Jas5:20" "$out/train.txt"
extract "1Pet1:1-3John1:14" "$out/val.txt"
extract "Jude1:1-Rev22:21" "$out/heldout.txt"
wc -lc "$out"/train.txt "$out"/val.txt "$out"/heldout.txt
