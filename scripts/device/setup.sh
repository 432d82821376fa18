# Sourced by the scripts in scripts/device/ on a lent GPU machine (no network there):
# installs the carried wheels (.whl: soundfile, cffi, pycparser, soxr for Python 3.12; skip
# with SKIP_WHEELS=1 where they are installed), puts src/ on PYTHONPATH, prints what torch
# sees, and defines unpack_corpus.

if [ -n "${OPENCODEC_WHEELS_READY:-}" ]; then
  :  # a script that sourced this before us (next_lease.sh -> campaign.sh) installed them: PYTHONPATH is set
elif [ -z "${SKIP_WHEELS:-}" ]; then
  compgen -G ".whl/*.whl" >/dev/null || {
    echo "setup: no wheels in .whl/: fill it here with scripts/device/tokenize_wheels.sh and carry .whl" \
      "(or SKIP_WHEELS=1 where soundfile and soxr are installed)" >&2; exit 1; }
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src OPENCODEC_WHEELS_READY=1
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
