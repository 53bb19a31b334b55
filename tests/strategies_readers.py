"""Hypothesis strategies for reader specs (``drivers.spec``)."""

from __future__ import annotations

from hypothesis import strategies as st

from drivers.spec import ReaderSpec

_name_chars = st.characters(min_codepoint=0x20, max_codepoint=0x7E)

pcsc_specs = st.one_of(
    st.just(ReaderSpec("pcsc")),
    st.text(_name_chars, min_size=1, max_size=40).filter(lambda s: s.strip() == s)
    .map(lambda name: ReaderSpec("pcsc", {"reader": name})),
)

_hex4 = st.integers(0, 0xFFFF).map(lambda n: f"{n:04x}")
nfc_specs = st.one_of(
    st.just(ReaderSpec("nfc", {"path": "usb"})),
    st.tuples(_hex4, _hex4).map(lambda t: ReaderSpec("nfc", {"path": f"usb:{t[0]}:{t[1]}"})),
    st.sampled_from(["AMA0", "S0", "USB0", "ACM1"])
    .map(lambda dev: ReaderSpec("nfc", {"path": f"tty:{dev}:pn532"})),
    st.integers(1, 65535).map(lambda p: ReaderSpec("nfc", {"path": f"udp:127.0.0.1:{p}"})),
)

_port = st.one_of(
    st.from_regex(r"/dev/tty(ACM|USB|S|AMA)[0-9]{1,2}", fullmatch=True),
    st.just("loop://"),
)
serial_specs = st.tuples(_port, st.one_of(st.none(), st.integers(1, 4_000_000))).map(
    lambda t: ReaderSpec("serial", {"port": t[0]} if t[1] is None
                         else {"port": t[0], "baudrate": t[1]}))

camera_specs = st.one_of(
    st.just(ReaderSpec("camera")),
    st.integers(0, 9).map(lambda i: ReaderSpec("camera", {"index": i})),
    st.integers(0, 9).map(lambda i: ReaderSpec("camera", {"device": f"/dev/video{i}"})),
)

reader_specs = st.one_of(st.just(ReaderSpec("virtual")), pcsc_specs, nfc_specs, serial_specs,
                         camera_specs)
