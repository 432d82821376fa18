# Sourced by the scripts in scripts/device/ on a lent GPU machine (no network there):
# installs the carried wheels (.whl: soundfile, cffi, pycparser, soxr for Python 3.12; skip
# with SKIP_WHEELS=1 where they are installed), puts src/ on PYTHONPATH, prints what torch
# sees, and defines unpack_corpus.

if [ -z "${SKIP_WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src
else
  export PYTHONPATH=$PWD/src
fi
export PYTHONUNBUFFERED=1
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
  torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"

# unpack_corpus OUT: decode the carried corpus (scripts/device/pack_corpus.py's output) to
# WAV under OUT. It travels as .gpu/corpus.tar (one file: the device tool counts a disk
# block per file, so a folder of small files costs far more) or as the folder .gpu/corpus.
unpack_corpus() {
  local packed=.gpu/corpus
  if [ -f .gpu/corpus.tar ]; then
    mkdir -p "$1.packed" && tar -C "$1.packed" -xf .gpu/corpus.tar || return 1
    packed=$1.packed/corpus
  fi
  python3 scripts/device/pack_corpus.py unpack "$packed" "$1" --workers "$(nproc)"
}
