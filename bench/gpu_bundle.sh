#!/usr/bin/env bash
# Fills .gpu/ (git-ignored) with what a bare GPU machine lacks for bench/gpu_session.sh: the datasets from
# ../shared/data (it does not travel) and wheels for the packages its image does not have (no network there).
# Run here, then on the GPU machine, with .gpu carried along: bash bench/gpu_session.sh
set -eu
cd "$(dirname "$0")/.."
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo /.gpu/ >> .git/info/exclude
rm -rf .gpu && mkdir -p .gpu/whl
tar -cJf .gpu/data.tar.xz -C ../shared data/wikitext-2 data/sst2/sentence_level data/rt-polarity data/wnut17 \
  data/ud_english_ewt
# The image's Python is 3.12 (x86-64); seqeval has no wheel on PyPI, so it is built here (pure Python).
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .gpu/whl \
  datasets==5.2.0 evaluate==0.4.6 dill==0.4.1 multiprocess==0.70.19
python -m pip wheel -q --no-deps -w .gpu/whl seqeval==1.2.2 . 2>/dev/null  # (setuptools warnings)
du -sh .gpu/* .gpu/whl/*
