"""Many independent streams advanced together: one batched step per frame for all of them.

    enc = MultiStreamEncoder(model)
    a, b = enc.open(), enc.open()                   # streams join at any frame
    out = enc.push({a: frame_a, b: frame_b})        # frames [C, n * hop] -> {id: codes [K, f]}
    last = enc.close(a, tail=rest_a)                # leave at any frame; tail < hop samples
    dec = MultiStreamDecoder(model)
    s = dec.open(); audio = dec.push({s: codes_t})  # codes [K, n] -> {id: audio [C, m]}

A stream's output arrives as from :class:`~opencodec.streaming.StreamingEncoder` /
:class:`~opencodec.streaming.StreamingDecoder` pushed one frame at a time: nothing during
the first ``warmup_frames - 1`` frames, then ``warmup_frames`` frames at once, then one per
frame (the encoder: one code frame per audio frame; the decoder: ``hop`` samples per code
frame). Each call to ``push`` advances only the streams it is given, so a stream whose
data is late simply skips that call; a stream may also be given several frames at once (a
server catching up), and the streams given the same number share one step, which costs far
less per frame than one step per frame.

The state of every live stream is held in one tensor per state entry with a row per stream
(:mod:`opencodec.step`); a push gathers the rows of the streams it advances, runs one
step on them and writes the rows back; a stream that joins gets a row when its warm-up
frames are in (they run through ``start`` together with the other streams that complete
their warm-up in the same push), and one that leaves gives its row up.

Exactness (see README, "Many streams at once"): ``batched=False`` runs each stream in its
own batch-1 step, which is bit for bit :class:`StreamingEncoder` (codes equal to
``model.encode``) and :class:`StreamingDecoder`. ``batched=True`` (default) runs the
streams in one batch: PyTorch's convolution kernels (and the decoder's native LSTM kernel)
round a batch of several streams differently from a batch of one (~1e-7 relative per
layer), so a stream's codes can differ from its codes alone on rare near-ties and its
audio by ~1e-6 relative L2 (measured in tests/test_multistream.py).
"""

from __future__ import annotations

import itertools
import typing as tp

import torch

from .model import EncodecModel
from .step import DecoderStep, EncoderStep, States
from .threads import one_thread

__all__ = ["MultiStreamDecoder", "MultiStreamEncoder"]


class _Rows:
    """The live streams' states: per state entry one tensor [N, ...], row i for ``ids[i]``."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.tensors: States = []

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, ids: list[int], states: States) -> None:
        if not self.ids:
            self.tensors = [s.contiguous() for s in states]
        else:
            self.tensors = [torch.cat([t, s]) for t, s in zip(self.tensors, states)]
        self.ids += ids

    def drop(self, sid: int) -> States:
        """Remove ``sid``'s row; returns it (each tensor [1, ...])."""
        i = self.ids.index(sid)
        row = [t[i:i + 1] for t in self.tensors]
        keep = [j for j in range(len(self.ids)) if j != i]
        self.tensors = [t[keep] for t in self.tensors] if keep else []
        del self.ids[i]
        return row

    def index(self, ids: list[int]) -> list[int] | None:
        """Row numbers of ``ids``; None when they are all the rows in order (no gather needed)."""
        if ids == self.ids:
            return None
        where = {sid: i for i, sid in enumerate(self.ids)}
        return [where[sid] for sid in ids]

    def get(self, rows: list[int] | None) -> States:
        return self.tensors if rows is None else [t[rows] for t in self.tensors]

    def put(self, rows: list[int] | None, states: tp.Sequence[torch.Tensor]) -> None:
        if rows is None:
            self.tensors = list(states)
        else:
            index = torch.tensor(rows)
            for t, s in zip(self.tensors, states):
                t.index_copy_(0, index, s)


def _exact(model: EncodecModel, exact: bool | None) -> bool:
    """``exact``, or the model's setting (``model.exact``) when None. Fast mode (False): the
    steps of :mod:`opencodec.step_fast`, equal up to float rounding."""
    return bool(getattr(model, "exact", True) if exact is None else exact)


def _padded(codes: torch.Tensor, count: int) -> torch.Tensor:
    """Codes [K, n] -> [count, n], the missing codebooks' rows -1."""
    if codes.shape[0] == count:
        return codes
    return torch.cat([codes, codes.new_full((count - codes.shape[0], codes.shape[1]), -1)])


class _MultiStream:
    """Bookkeeping shared by the encoder and the decoder: warm-up buffers and state rows."""

    def __init__(self, step: EncoderStep | DecoderStep, batched: bool):
        self._step = step
        self.batched = batched
        self.warmup_frames = step.warmup_frames
        self.hop_length = step.hop_length
        self._ids = itertools.count()
        self._warming: dict[int, list[torch.Tensor]] = {}  # stream -> its first frames so far
        self._rows = _Rows()
        self.frames_in: dict[int, int] = {}

    @property
    def streams(self) -> list[int]:
        """The open streams' ids."""
        return list(self._warming) + list(self._rows.ids)

    def open(self) -> int:
        """Start a new stream; returns its id."""
        sid = next(self._ids)
        self._warming[sid] = []
        self.frames_in[sid] = 0
        return sid

    def _known(self, sid: int) -> None:
        if sid not in self.frames_in:
            raise KeyError(f"no open stream {sid}")

    def _groups(self, ids: list[int]) -> list[list[int]]:
        if not ids:
            return []
        return [ids] if self.batched else [[sid] for sid in ids]

    def _advance(self, items: tp.Mapping[int, torch.Tensor], frames: tp.Callable[[torch.Tensor], int],
                 ) -> dict[int, torch.Tensor]:
        """Feed one item of n >= 1 frames per stream; returns each stream's new output (possibly
        empty). Live streams are stepped in one batch per frame count n."""
        out: dict[int, torch.Tensor] = {}
        live: dict[int, list[int]] = {}  # frame count -> streams
        starting: list[int] = []
        after_start: dict[int, torch.Tensor] = {}  # frames beyond a warm-up completed in this item
        for sid, item in items.items():
            self._known(sid)
            n = frames(item)
            self.frames_in[sid] += n
            if sid in self._warming:
                warming = self._warming[sid]
                need = self.warmup_frames - len(warming)
                unit = item.shape[-1] // n
                warming.extend(item[..., j * unit:(j + 1) * unit] for j in range(min(n, need)))  # one per frame
                if n >= need:
                    starting.append(sid)
                    if n > need:
                        after_start[sid] = item[..., need * unit:]
                else:
                    out[sid] = self._empty()
            else:
                live.setdefault(n, []).append(sid)
        with torch.inference_mode():
            for sids in live.values():
                self._step_live(sids, items, out)
            for group in self._groups(starting):
                x = torch.stack([torch.cat(self._warming.pop(sid), dim=-1) for sid in group])
                y, state = self._step.start(x)
                self._rows.add(group, state)
                out.update(zip(group, y))
            by_count: dict[int, list[int]] = {}
            for sid, rest in after_start.items():
                by_count.setdefault(frames(rest), []).append(sid)
            for sids in by_count.values():
                more: dict[int, torch.Tensor] = {}
                self._step_live(sids, after_start, more)
                for sid in sids:
                    out[sid] = torch.cat([out[sid], more[sid]], dim=-1)
        return out

    def _step_live(self, sids: list[int], items: tp.Mapping[int, torch.Tensor],
                   out: dict[int, torch.Tensor]) -> None:
        """One step of live streams whose items have the same number of frames."""
        for group in self._groups(sids):
            rows = self._rows.index(group)
            y, *new = self._step(torch.stack([items[sid] for sid in group]), *self._rows.get(rows))
            self._rows.put(rows, new)
            out.update(zip(group, y))

    def _empty(self) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class MultiStreamEncoder(_MultiStream):
    """N audio streams -> N code streams, one batched step per frame.

    ``push({id: frame [C, hop]})`` -> ``{id: codes [K, f]}``; a stream's codes, concatenated
    with those ``close`` returns, equal ``model.encode`` of its audio (``batched=False``: bit
    for bit; ``batched=True``: up to rare near-ties, see the module doc). K is
    ``model.num_codebooks()`` when built (set the bandwidth first). Residual quantisation is
    sequential, so a stream at a lower bandwidth takes the first rows of its codes: one encoder
    at the highest bandwidth serves streams at every bandwidth.
    """

    def __init__(self, model: EncodecModel, batched: bool = True, exact: bool | None = None):
        super().__init__(EncoderStep(model, exact=_exact(model, exact)), batched)
        self.model = model
        self.channels = model.channels
        self.num_codebooks = self._step.num_codebooks

    def _empty(self) -> torch.Tensor:
        return torch.empty(self.num_codebooks, 0, dtype=torch.long)

    def push(self, frames: tp.Mapping[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """Whole frames [C, n * hop] (n >= 1, per stream) for each stream given -> the code
        frames now complete, {id: [K, f]}. Streams given the same n share one batched step;
        a stream's codes are those of pushing its frames one at a time (up to the batched
        rounding of the module doc)."""
        for sid, frame in frames.items():
            if (frame.dim() != 2 or frame.shape[0] != self.channels or frame.shape[-1] == 0
                    or frame.shape[-1] % self.hop_length):
                raise ValueError(f"stream {sid}: expected whole frames [{self.channels}, n * {self.hop_length}], "
                                 f"got {list(frame.shape)}")
        with one_thread(next(iter(frames.values()), None)):  # codes independent of the thread count
            return self._advance(frames, lambda frame: frame.shape[-1] // self.hop_length)

    def close(self, sid: int, tail: torch.Tensor | None = None) -> torch.Tensor:
        """End stream ``sid`` after its last samples ``tail`` [C, r] (0 <= r < hop); returns its
        remaining code frames [K, f] (a stream shorter than the warm-up: all of them)."""
        self._known(sid)
        if tail is not None and (tail.dim() != 2 or tail.shape[0] != self.channels
                                 or tail.shape[-1] >= self.hop_length):
            raise ValueError(f"a tail is [{self.channels}, r] with r < {self.hop_length}, "
                             f"got {list(tail.shape)}")
        del self.frames_in[sid]
        has_tail = tail is not None and tail.shape[-1] > 0
        with torch.inference_mode(), one_thread(tail):
            if sid in self._warming:
                audio = self._warming.pop(sid) + ([tail] if has_tail else [])
                if not audio:
                    return self._empty()
                return self.model.encode(torch.cat(audio, dim=-1)[None])[0].codes[0]
            state = self._rows.drop(sid)
            if not has_tail:
                return self._empty()
            assert tail is not None
            return self._step.finish(tail[None], state)[0]


class MultiStreamDecoder(_MultiStream):
    """N code streams -> N audio streams, one batched step per frame.

    ``push({id: codes [K, 1]})`` -> ``{id: audio [C, m]}``; a stream's audio equals
    :class:`~opencodec.streaming.StreamingDecoder`'s for the same codes (``batched=False``:
    bit for bit; ``batched=True``: ~1e-6 relative, see the module doc). Trim the end to the
    signal length as with ``model.decode``.
    """

    def __init__(self, model: EncodecModel, batched: bool = True, exact: bool | None = None):
        super().__init__(DecoderStep(model, exact=_exact(model, exact)), batched)
        self.model = model
        self.channels = model.channels
        self.num_codebooks = model.num_codebooks()
        # Fast mode: streams at different bandwidths share a step, their codes padded with -1
        # (no codebook) to every codebook the quantiser has; exact mode: one K per push.
        self.mixed_bandwidths = not self._step.exact
        self.max_codebooks = len(model.quantizer.vq.layers)

    def _empty(self) -> torch.Tensor:
        return torch.empty(self.channels, 0)

    def push(self, codes: tp.Mapping[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """Code frames [K, n] (n >= 1, per stream) for each stream given -> the audio now
        complete, {id: [C, m]}. Exact mode: the same K for all streams; fast mode
        (``mixed_bandwidths``): any K up to ``max_codebooks`` (the quantiser's; a stream adds
        zeros for the codebooks it lacks, which rounds like a sum in another order, ~1e-7).
        Streams given the same n share one batched step. Several frames at once run the
        kernels over a longer input, which rounds differently from one frame per push (~1e-6
        relative, tests/test_multistream.py)."""
        k = None
        for sid, frame in codes.items():
            if (frame.dim() != 2 or frame.shape[-1] < 1
                    or (self.mixed_bandwidths and frame.shape[0] > self.max_codebooks)
                    or (not self.mixed_bandwidths and k is not None and frame.shape[0] != k)):
                what = (f"at most {self.max_codebooks} codebooks" if self.mixed_bandwidths
                        else "the same K for all streams")
                raise ValueError(f"stream {sid}: expected code frames [K, n] ({what}), got {list(frame.shape)}")
            k = frame.shape[0]
        if self.mixed_bandwidths:
            codes = {sid: _padded(frame, self.max_codebooks) for sid, frame in codes.items()}
        return self._advance(codes, lambda frame: frame.shape[-1])

    def close(self, sid: int) -> torch.Tensor:
        """End stream ``sid``; returns its remaining audio [C, m] (a stream shorter than the
        warm-up: all of it, decoded as the offline decoder decodes so short a stream)."""
        self._known(sid)
        del self.frames_in[sid]
        if sid in self._warming:
            frames = self._warming.pop(sid)
            if not frames:
                return self._empty()
            with torch.inference_mode():
                return self._step.start(torch.cat(frames, dim=-1)[None])[0][0]
        self._rows.drop(sid)
        return self._empty()
