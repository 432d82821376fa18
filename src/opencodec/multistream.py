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

Input is checked before any stream changes: ``push`` validates the whole request (every id
open, every frame's shape, dtype (float32, the model's), device and finite samples, or every
code frame's K and codes in ``[0, bins)``) and raises ``InvalidAudioError`` /
``InvalidCodesError`` (``ValueError``) or ``KeyError`` naming the stream, with nothing
consumed. The steps' results are committed only once every step of the push has succeeded,
so a step that raises leaves every stream as it was before the push. What a stream keeps past a
push (its warm-up frames) is a copy: a caller may reuse one buffer for every push.

Exactness (see README, "Many streams at once"): ``batched=False`` runs each stream in its
own batch-1 step, which is bit for bit :class:`StreamingEncoder` (``model.encode``'s codes
but for rare near-ties, see :mod:`opencodec.streaming`) and :class:`StreamingDecoder`. ``batched=True`` (default) runs the
streams in one batch: PyTorch's convolution kernels (and the decoder's native LSTM kernel)
round a batch of several streams differently from a batch of one (~1e-7 relative per
layer), so a stream's codes can differ from its codes alone on rare near-ties and its
audio by ~1e-6 relative L2 (measured in tests/test_multistream.py).
"""

from __future__ import annotations

import itertools
import numbers
import typing as tp
from dataclasses import dataclass, field

import torch

from .errors import InvalidAudioError, InvalidCodesError
from .input_checks import check_audio_tensor, check_codes, check_finite, check_model, describe, parameter_dtype_device
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

    def row(self, sid: int) -> States:
        """``sid``'s row (each tensor [1, ...]), left in place."""
        i = self.ids.index(sid)
        return [t[i:i + 1] for t in self.tensors]

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


@dataclass
class _Plan:
    """What one ``push`` will do, worked out before anything changes: ``counts`` frames per
    stream; ``live`` frame count -> the live streams given that many; ``warming`` a stream still
    in its warm-up after this push -> its new warm-up frames; ``starting`` the streams whose
    warm-up completes, with ``first`` (their warm-up frames, one tensor per frame) and ``rest``
    (their frames beyond the warm-up, when there are any)."""

    counts: dict[int, int] = field(default_factory=dict)
    live: dict[int, list[int]] = field(default_factory=dict)
    warming: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    starting: list[int] = field(default_factory=list)
    first: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    rest: dict[int, torch.Tensor] = field(default_factory=dict)


class _MultiStream:
    """Bookkeeping shared by the encoder and the decoder: warm-up buffers and state rows.

    A push is planned (:meth:`_plan`), its steps run, and only then are their results
    committed: a step that raises leaves every stream as it was."""

    def __init__(self, step: EncoderStep | DecoderStep, batched: bool):
        self._step = step
        self.batched = batched
        self.warmup_frames = step.warmup_frames
        self.hop_length = step.hop_length
        self._ids = itertools.count()
        self._warming: dict[int, list[torch.Tensor]] = {}  # stream -> its first frames so far
        self._rows = _Rows()
        self.frames_in: dict[int, int] = {}
        self._staged: list[tuple[list[int] | None, tp.Sequence[torch.Tensor]]] = []  # row updates of a push

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

    @staticmethod
    def _check_id(sid: object) -> None:
        """``TypeError`` unless ``sid`` is an int (what ``open`` returns); the message shows
        its type, never its value (a tensor given by mistake would fill the screen)."""
        if isinstance(sid, bool) or not isinstance(sid, numbers.Integral):
            what = "a torch.Tensor" if isinstance(sid, torch.Tensor) else describe(sid)
            raise TypeError(f"stream ids are the ints open() returns, got {what}")

    def _known(self, sid: int) -> None:
        self._check_id(sid)
        if sid not in self.frames_in:
            raise KeyError(f"no open stream {sid}")

    def _check_ids(self, items: tp.Mapping[int, tp.Any], what: str) -> None:
        """``TypeError`` unless ``items`` is a mapping with int keys (``what``: its values,
        for the message); ``KeyError`` naming the first id that is not an open stream."""
        if not isinstance(items, tp.Mapping):
            raise TypeError(f"push takes a dict {{stream id: {what}}}, got {describe(items)}")
        for sid in items:
            self._check_id(sid)
        for sid in items:
            if sid not in self.frames_in:
                raise KeyError(f"no open stream {sid} (open: {sorted(self.frames_in)}); nothing in "
                               "this push was consumed")

    def _groups(self, ids: list[int]) -> list[list[int]]:
        if not ids:
            return []
        return [ids] if self.batched else [[sid] for sid in ids]

    def _plan(self, items: tp.Mapping[int, torch.Tensor], frames: tp.Callable[[torch.Tensor], int]) -> _Plan:
        """What pushing ``items`` (checked) does to each stream; changes nothing."""
        plan = _Plan()
        for sid, item in items.items():
            n = frames(item)
            plan.counts[sid] = n
            if sid not in self._warming:
                plan.live.setdefault(n, []).append(sid)
                continue
            need = self.warmup_frames - len(self._warming[sid])
            unit = item.shape[-1] // n
            new = [item[..., j * unit:(j + 1) * unit] for j in range(min(n, need))]  # one per frame
            if n < need:
                plan.warming[sid] = new
                continue
            plan.starting.append(sid)
            plan.first[sid] = self._warming[sid] + new
            if n > need:
                plan.rest[sid] = item[..., need * unit:]
        return plan

    def _advance(self, items: tp.Mapping[int, torch.Tensor], frames: tp.Callable[[torch.Tensor], int],
                 ) -> dict[int, torch.Tensor]:
        """Feed one checked item of n >= 1 frames per stream; returns each stream's new output
        (possibly empty). Live streams are stepped in one batch per frame count n. The streams
        change only after every step has succeeded."""
        plan = self._plan(items, frames)
        out: dict[int, torch.Tensor] = {sid: self._empty() for sid in plan.warming}
        started: list[tuple[list[int], States]] = []
        self._staged = []
        with torch.inference_mode():  # the state rows are inference tensors
            try:
                for sids in plan.live.values():
                    self._step_live(sids, items, out)
                for group in self._groups(plan.starting):
                    started.append((group, self._start(group, plan, frames, out)))
                staged = self._staged
            finally:
                self._staged = []
            # commit: rows first (their indices are those before the new streams' rows are added)
            for rows, states in staged:
                self._rows.put(rows, states)
            for group, state in started:
                for sid in group:
                    del self._warming[sid]
                self._rows.add(group, state)
        for sid, new in plan.warming.items():  # copies: a frame may be a buffer the caller reuses
            self._warming[sid].extend(frame.detach().clone() for frame in new)
        for sid, n in plan.counts.items():
            self.frames_in[sid] += n
        return out

    def _start(self, group: list[int], plan: _Plan, frames: tp.Callable[[torch.Tensor], int],
               out: dict[int, torch.Tensor]) -> States:
        """Run the warm-up of the streams ``group`` (and, for those given more, their frames
        beyond it, in one step per frame count); their outputs into ``out``. Returns their
        state rows (not yet added)."""
        x = torch.stack([torch.cat(plan.first[sid], dim=-1) for sid in group])
        y, first_state = self._step.start(x)
        out.update(zip(group, y))
        state = [t.contiguous() for t in first_state]
        by_count: dict[int, list[int]] = {}  # frames beyond the warm-up -> positions in group
        for i, sid in enumerate(group):
            if sid in plan.rest:
                by_count.setdefault(frames(plan.rest[sid]), []).append(i)
        for where in by_count.values():
            every = len(where) == len(group)
            rows = None if every else torch.tensor(where, device=x.device)
            more, *new = self._step(torch.stack([plan.rest[group[i]] for i in where]),
                                    *(state if rows is None else [t[rows] for t in state]))
            state = list(new) if rows is None else [t.index_copy(0, rows, s) for t, s in zip(state, new)]
            for j, i in enumerate(where):
                out[group[i]] = torch.cat([out[group[i]], more[j]], dim=-1)
        return state

    def _step_live(self, sids: list[int], items: tp.Mapping[int, torch.Tensor],
                   out: dict[int, torch.Tensor]) -> None:
        """One step of live streams whose items have the same number of frames; their new
        state rows are staged (``_advance`` commits them)."""
        for group in self._groups(sids):
            rows = self._rows.index(group)
            y, *new = self._step(torch.stack([items[sid] for sid in group]), *self._rows.get(rows))
            self._staged.append((rows, new))
            out.update(zip(group, y))

    def _empty(self) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class MultiStreamEncoder(_MultiStream):
    """N audio streams -> N code streams, one batched step per frame.

    ``push({id: frame [C, hop]})`` -> ``{id: codes [K, f]}``; a stream's codes, concatenated
    with those ``close`` returns, equal ``model.encode`` of its audio up to rare near-ties (``batched=False``: bit for bit
    :class:`StreamingEncoder`'s; ``batched=True``: a few more, see the module doc). K is
    ``model.num_codebooks()`` when built (set the bandwidth first). Residual quantisation is
    sequential, so a stream at a lower bandwidth takes the first rows of its codes: one encoder
    at the highest bandwidth serves streams at every bandwidth.
    """

    def __init__(self, model: EncodecModel, batched: bool = True, exact: bool | None = None):
        check_model(model, "MultiStreamEncoder")
        super().__init__(EncoderStep(model, exact=_exact(model, exact)), batched)
        self.model = model
        self.channels = model.channels
        self.num_codebooks = self._step.num_codebooks
        self._bandwidth = model.bandwidth  # the K above: a short stream's offline codes use it too
        # the steps copied the weights now: frames must match them (read once, not per push)
        self._dtype, self._device = parameter_dtype_device(model)

    def _empty(self) -> torch.Tensor:
        return torch.empty(self.num_codebooks, 0, dtype=torch.long)

    def _check_frames(self, frames: tp.Mapping[int, torch.Tensor]) -> None:
        """``KeyError`` for an id that is not open, ``InvalidAudioError`` (a ``ValueError``)
        naming the stream for a frame that is not a float32 (the model's dtype) tensor
        [C, n * hop] on the model's device with finite samples. Changes nothing."""
        self._check_ids(frames, f"frames [{self.channels}, n * {self.hop_length}]")
        for sid, frame in frames.items():
            prefix = f"stream {sid}: "
            layout = f"[{self.channels}, n * {self.hop_length}]"
            check_audio_tensor(frame, layout, self._dtype, self._device, prefix)
            check_finite(frame, prefix)
            if (frame.dim() != 2 or frame.shape[0] != self.channels or frame.shape[-1] == 0
                    or frame.shape[-1] % self.hop_length):
                raise InvalidAudioError(f"{prefix}expected whole frames {layout}, got {list(frame.shape)}")

    def push(self, frames: tp.Mapping[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """Whole frames [C, n * hop] (n >= 1, per stream; float32 with finite samples) for each
        stream given -> the code frames now complete, {id: [K, f]}. Streams given the same n
        share one batched step; a stream's codes are those of pushing its frames one at a time
        (up to the batched rounding of the module doc). The whole request is checked first: a
        bad id (``KeyError``) or frame (``InvalidAudioError``) consumes nothing."""
        self._check_frames(frames)
        with one_thread(next(iter(frames.values()), None)):  # codes independent of the thread count
            return self._advance(frames, lambda frame: frame.shape[-1] // self.hop_length)

    def close(self, sid: int, tail: torch.Tensor | None = None) -> torch.Tensor:
        """End stream ``sid`` after its last samples ``tail`` [C, r] (0 <= r < hop; float32,
        finite); returns its remaining code frames [K, f] (a stream shorter than the warm-up:
        all of them). A bad tail raises ``InvalidAudioError`` and leaves the stream open."""
        self._known(sid)
        if tail is not None:
            layout = f"[{self.channels}, r] with r < {self.hop_length}"
            self.model.check_audio(tail, layout, f"stream {sid}: tail: ")
            if tail.dim() != 2 or tail.shape[0] != self.channels or tail.shape[-1] >= self.hop_length:
                raise InvalidAudioError(f"stream {sid}: a tail is {layout}, got {list(tail.shape)}")
        has_tail = tail is not None and tail.shape[-1] > 0
        with torch.inference_mode(), one_thread(tail):
            if sid in self._warming:
                audio = self._warming[sid] + ([tail] if has_tail else [])
                codes = self._encode_offline(torch.cat(audio, dim=-1)) if audio else self._empty()
                del self._warming[sid]
            else:
                codes = self._empty()
                if tail is not None and has_tail:
                    codes = self._step.finish(tail[None], self._rows.row(sid))[0]
                self._rows.drop(sid)
        del self.frames_in[sid]
        return codes

    def _encode_offline(self, audio: torch.Tensor) -> torch.Tensor:
        """``model.encode``'s codes [K, f] of a whole short stream audio [C, n], at this
        encoder's K even when the model's bandwidth changed since it was built."""
        previous = self.model.bandwidth
        self.model.bandwidth = self._bandwidth
        try:
            return self.model.encode(audio[None])[0].codes[0]
        finally:
            self.model.bandwidth = previous


class MultiStreamDecoder(_MultiStream):
    """N code streams -> N audio streams, one batched step per frame.

    ``push({id: codes [K, 1]})`` -> ``{id: audio [C, m]}``; a stream's audio equals
    :class:`~opencodec.streaming.StreamingDecoder`'s for the same codes (``batched=False``:
    bit for bit; ``batched=True``: ~1e-6 relative, see the module doc). Trim the end to the
    signal length as with ``model.decode``.
    """

    def __init__(self, model: EncodecModel, batched: bool = True, exact: bool | None = None):
        check_model(model, "MultiStreamDecoder")
        super().__init__(DecoderStep(model, exact=_exact(model, exact)), batched)
        self.model = model
        self.channels = model.channels
        self.num_codebooks = model.num_codebooks()
        # Fast mode: streams at different bandwidths share a step, their codes padded with -1
        # (no codebook) to every codebook the quantiser has; exact mode: one K per push.
        self.mixed_bandwidths = not self._step.exact
        self.max_codebooks = len(model.quantizer.vq.layers)
        self._device = parameter_dtype_device(model)[1]

    def _empty(self) -> torch.Tensor:
        return torch.empty(self.channels, 0)

    def _check_codes(self, codes: tp.Mapping[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """The code frames as int64, or ``KeyError`` for an id that is not open and
        ``InvalidCodesError`` (a ``ValueError``) naming the stream for code frames that are not
        an integer tensor [K, n] (n >= 1, K <= ``max_codebooks``) on the model's device with
        codes in ``[0, bins)``; in exact mode also for a K other than the push's other streams'
        or than the frames of the stream's warm-up so far. Changes nothing."""
        self._check_ids(codes, "code frames [K, n]")
        checked: dict[int, torch.Tensor] = {}
        k = None
        for sid, frame in codes.items():
            prefix = f"stream {sid}: "
            if isinstance(frame, torch.Tensor) and (frame.dim() != 2 or frame.shape[-1] < 1
                                                    or frame.shape[0] > self.max_codebooks):
                raise InvalidCodesError(f"{prefix}expected code frames [K, n] (n >= 1, at most "
                                        f"{self.max_codebooks} codebooks), got {list(frame.shape)}")
            frame = check_codes(frame, "[K, n]", self.model.bins, self.max_codebooks, self._device,
                                codebook_dim=0, prefix=prefix)
            if not self.mixed_bandwidths:
                if k is not None and frame.shape[0] != k:
                    raise InvalidCodesError(f"{prefix}expected code frames [K, n] (the same K for all "
                                            f"streams), got {list(frame.shape)}")
                warming = self._warming.get(sid)
                if warming and warming[0].shape[0] != frame.shape[0]:
                    raise InvalidCodesError(
                        f"{prefix}got {frame.shape[0]} codebooks, but the {len(warming)} frame(s) of its "
                        f"warm-up so far have {warming[0].shape[0]}: in exact mode a stream keeps one K "
                        f"for its first {self.warmup_frames} frames")
                k = frame.shape[0]
            checked[sid] = frame
        return checked

    def push(self, codes: tp.Mapping[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """Code frames [K, n] (n >= 1, per stream; integers in ``[0, bins)``) for each stream
        given -> the audio now complete, {id: [C, m]}. Exact mode: the same K for all streams
        (and for a stream's first ``warmup_frames`` frames); fast mode
        (``mixed_bandwidths``): any K up to ``max_codebooks`` (the quantiser's; a stream adds
        zeros for the codebooks it lacks, which rounds like a sum in another order, ~1e-7).
        Streams given the same n share one batched step. Several frames at once run the
        kernels over a longer input, which rounds differently from one frame per push (~1e-6
        relative, tests/test_multistream.py). The whole request is checked first: a bad id
        (``KeyError``) or code frame (``InvalidCodesError``) consumes nothing."""
        checked = self._check_codes(codes)
        if self.mixed_bandwidths:
            checked = {sid: _padded(frame, self.max_codebooks) for sid, frame in checked.items()}
        return self._advance(checked, lambda frame: frame.shape[-1])

    def close(self, sid: int) -> torch.Tensor:
        """End stream ``sid``; returns its remaining audio [C, m] (a stream shorter than the
        warm-up: all of it, decoded as the offline decoder decodes so short a stream)."""
        self._known(sid)
        if sid in self._warming:
            frames = self._warming[sid]
            audio = self._empty()
            if frames:
                with torch.inference_mode():
                    audio = self._step.start(torch.cat(frames, dim=-1)[None])[0][0]
            del self._warming[sid]
        else:
            audio = self._empty()
            self._rows.drop(sid)
        del self.frames_in[sid]
        return audio
