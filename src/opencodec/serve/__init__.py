"""``opencodec serve``: live encoding, decoding and relaying over WebSocket for many clients
at once, with a browser page (microphone in, decoded audio out).

One job per module:

* :mod:`.protocol`: the messages, PCM on the wire, close codes;
* :mod:`.engine`: the batcher, one batched encoder/decoder step per tick for all streams;
* :mod:`.server`: the WebSocket server and the page;
* :mod:`.limits`: what a client may make it hold (:class:`~.limits.ServeLimits`) and the gate
  on connections still opening;
* :mod:`.session`: one stream's state; :mod:`.decode_input`: a decoding client's packets;
  :mod:`.pacing`: relayed audio at real-time pace; :mod:`.aio`: asyncio and signal helpers;
* :mod:`.client`: a Python client (tests, ``benchmarks/serve_load.py``);
* ``static/``: the page (HTML, JS, the capture AudioWorklet).

Needs the ``serve`` extra (``pip install 'opencodec[serve]'``: the ``websockets`` package).
"""

from .protocol import CLOSE, MODES, Hello, ProtocolError

__all__ = ["CLOSE", "MODES", "Hello", "ProtocolError"]
