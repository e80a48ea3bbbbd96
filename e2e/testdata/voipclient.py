#!/usr/bin/env python3
"""voipclient.py: a Matrix VoIP (m.call.*, version "1") test client with
real WebRTC media (aiortc) and real Matrix signalling (matrix-nio).

It logs in to a homeserver as a Matrix user and either calls someone in a
room (--call) or waits for an invite there and answers it (--answer). It
sends a sine tone (--tone Hz) and measures, with the Goertzel algorithm on
the decoded PCM it receives, how much of the received audio is at --detect
Hz. It ends the call itself after --hangup-after seconds of media, or waits
for the other side to end it, or rejects the invite (--reject).

Every line it prints on stdout is one JSON object with an "event" field:
ready, invite_sent, invite, answer_sent, answer, select_answer, candidates,
media (every second: packets and tone ratio so far), hangup_sent,
reject_sent, hangup (the remote's m.call.hangup or m.call.reject), error,
and last result (with packets_received, frames, tone_ratio, tone_detected,
control_ratio for --control, ended_by, reason). It exits 0 when the call went as asked, 1 otherwise.

Run it with the interpreter of the venv that scripts/install-peers.sh makes
(.cache/peers/voip-venv). On a machine with only loopback, pass --loopback:
aioice leaves 127.0.0.1 out of its candidates otherwise.
"""

import argparse
import array
import asyncio
import fractions
import json
import math
import sys
import time
import uuid

import aioice.ice
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError
import av
from nio import AsyncClient, LoginResponse, SyncResponse

RATE = 48000
PTIME = 0.02
SAMPLES = int(RATE * PTIME)


def out(event, **fields):
    fields["event"] = event
    fields["t"] = round(time.monotonic(), 3)
    print(json.dumps(fields), flush=True)


class ToneTrack(AudioStreamTrack):
    """A mono 48 kHz sine tone, paced in real time."""

    def __init__(self, freq, amplitude=8000):
        super().__init__()
        self.freq = freq
        self.amplitude = amplitude
        self.n = 0
        self.start = None

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        if self.start is None:
            self.start = time.time()
        else:
            wait = self.start + (self.n / RATE) - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
        samples = array.array("h", (
            int(self.amplitude * math.sin(2 * math.pi * self.freq * (self.n + i) / RATE))
            for i in range(SAMPLES)))
        frame = av.AudioFrame(format="s16", layout="mono", samples=SAMPLES)
        frame.planes[0].update(samples.tobytes())
        frame.sample_rate = RATE
        frame.pts = self.n
        frame.time_base = fractions.Fraction(1, RATE)
        self.n += SAMPLES
        return frame


def goertzel_ratio(samples, rate, freq):
    """The share of the energy of samples that is at freq (0 to 1)."""
    n = len(samples)
    if n == 0:
        return 0.0
    k = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    energy = 0.0
    for x in samples:
        s0 = x + k * s1 - s2
        s2, s1 = s1, s0
        energy += x * x
    power = s1 * s1 + s2 * s2 - k * s1 * s2
    if energy == 0:
        return 0.0
    return min(1.0, power / (energy * n / 2))


class Detector:
    """Reads a remote track and measures the tone in it."""

    def __init__(self, freq, control):
        self.freq = freq
        self.control = control
        self.frames = 0
        self.ratios = []
        self.controls = []
        self.first = None

    def first_channel(self, frame):
        pcm = array.array("h")
        pcm.frombytes(bytes(frame.planes[0])[: frame.samples * 2 * len(frame.layout.channels)])
        ch = len(frame.layout.channels)
        if frame.format.is_planar or ch == 1:
            return pcm[: frame.samples]
        return pcm[::ch][: frame.samples]

    async def run(self, track):
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.frames += 1
            if self.first is None:
                self.first = time.monotonic()
            if frame.format.name not in ("s16", "s16p"):
                continue
            samples = self.first_channel(frame)
            self.ratios.append(goertzel_ratio(samples, frame.sample_rate, self.freq))
            if self.control:
                self.controls.append(goertzel_ratio(samples, frame.sample_rate, self.control))

    @staticmethod
    def mean(ratios):
        # the last two seconds, past the first frames of the jitter buffer
        recent = ratios[-100:]
        return sum(recent) / len(recent) if recent else 0.0

    def ratio(self):
        return self.mean(self.ratios)

    def control_ratio(self):
        return self.mean(self.controls)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--homeserver", required=True)
    p.add_argument("--user", required=True, help="localpart or full user ID")
    p.add_argument("--password", required=True)
    p.add_argument("--room", help="room ID of the DM (with --answer: any room when not given; "
                   "the first invite found decides)")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--call", metavar="USER_ID", help="invite USER_ID to a call in the room")
    mode.add_argument("--answer", action="store_true", help="wait for an invite in the room and answer it")
    p.add_argument("--reject", action="store_true", help="with --answer: reject the invite instead")
    p.add_argument("--tone", type=float, default=440.0, help="frequency of the tone to send (Hz)")
    p.add_argument("--detect", type=float, default=440.0, help="frequency to detect in what comes back (Hz)")
    p.add_argument("--control", type=float, default=0.0,
                   help="also measure this frequency, which should not be there (Hz)")
    p.add_argument("--threshold", type=float, default=0.5, help="tone ratio that counts as detected")
    p.add_argument("--hangup-after", type=float, default=0.0,
                   help="hang up after this many seconds of received media (0: wait for the remote hangup)")
    p.add_argument("--timeout", type=float, default=60.0, help="give up after this many seconds")
    p.add_argument("--loopback", action="store_true", help="offer 127.0.0.1 as an ICE candidate")
    p.add_argument("--no-candidates", action="store_true", help="send no m.call.candidates (they repeat the SDP's)")
    p.add_argument("--trickle", action="store_true",
                   help="leave the candidates out of the SDP: send them only as m.call.candidates, as browsers do")
    args = p.parse_args()
    if args.call and not args.room:
        p.error("--call needs --room")
    return args


class Client:
    def __init__(self, args):
        self.args = args
        self.nio = AsyncClient(args.homeserver, args.user)
        self.party = "voipclient-" + uuid.uuid4().hex[:8]
        self.call_id = None
        self.remote_party = None
        self.pc = None
        self.detector = Detector(args.detect, args.control)
        self.ended = asyncio.Event()
        self.answered = asyncio.Event()
        self.ended_by = None
        self.reason = None
        self.since = None
        self.tasks = []

    async def send(self, typ, content):
        content.update({"call_id": self.call_id, "party_id": self.party, "version": "1"})
        resp = await self.nio.room_send(self.args.room, typ, content, ignore_unverified_devices=True)
        if not hasattr(resp, "event_id"):
            out("error", what="send " + typ, detail=str(resp))

    def new_pc(self):
        pc = RTCPeerConnection()

        @pc.on("track")
        def on_track(track):
            if track.kind == "audio":
                self.tasks.append(asyncio.ensure_future(self.detector.run(track)))

        @pc.on("connectionstatechange")
        async def on_state():
            out("connection", state=pc.connectionState)
            if pc.connectionState == "failed" and not self.ended.is_set():
                await self.hangup("ice_failed")

        pc.addTrack(ToneTrack(self.args.tone))
        return pc

    async def send_candidates(self):
        if self.args.no_candidates:
            return
        lines = [l[2:] for l in self.pc.localDescription.sdp.splitlines() if l.startswith("a=candidate:")]
        cands = [{"candidate": c, "sdpMid": "0", "sdpMLineIndex": 0} for c in lines]
        cands.append({"candidate": "", "sdpMid": "0", "sdpMLineIndex": 0})  # end of candidates
        await self.send("m.call.candidates", {"candidates": cands})

    def local_sdp(self):
        sdp = self.pc.localDescription.sdp
        if self.args.trickle:
            sdp = "".join(l + "\r\n" for l in sdp.splitlines()
                          if not l.startswith("a=candidate:") and l != "a=end-of-candidates")
        return sdp

    async def place(self):
        self.call_id = "vc" + uuid.uuid4().hex
        self.pc = self.new_pc()
        await self.pc.setLocalDescription(await self.pc.createOffer())
        await self.send("m.call.invite", {
            "lifetime": 60000, "invitee": self.args.call,
            "offer": {"type": "offer", "sdp": self.local_sdp()},
        })
        out("invite_sent", call_id=self.call_id)
        await self.send_candidates()

    async def take_invite(self, sender, content):
        self.call_id = content.get("call_id")
        self.remote_party = content.get("party_id")
        out("invite", call_id=self.call_id, sender=sender, party_id=self.remote_party,
            lifetime=content.get("lifetime"), version=content.get("version"))
        if self.args.reject:
            await self.send("m.call.reject", {})
            out("reject_sent", call_id=self.call_id)
            self.end("local", "reject")
            return
        self.pc = self.new_pc()
        offer = content.get("offer") or {}
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer.get("sdp", ""), type="offer"))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        await self.send("m.call.answer", {"answer": {"type": "answer", "sdp": self.local_sdp()}})
        out("answer_sent", call_id=self.call_id)
        await self.send_candidates()
        self.answered.set()

    async def on_event(self, ev):
        src = ev.source
        typ, sender, content = src.get("type", ""), src.get("sender"), src.get("content") or {}
        if not typ.startswith("m.call.") or sender == self.nio.user_id:
            return
        if typ == "m.call.invite":
            if self.args.answer and self.call_id is None:
                await self.take_invite(sender, content)
            return
        if content.get("call_id") != self.call_id:
            return
        if typ == "m.call.answer" and self.args.call and not self.answered.is_set():
            self.remote_party = content.get("party_id")
            out("answer", call_id=self.call_id, party_id=self.remote_party, version=content.get("version"))
            await self.pc.setRemoteDescription(
                RTCSessionDescription(sdp=(content.get("answer") or {}).get("sdp", ""), type="answer"))
            await self.send("m.call.select_answer", {"selected_party_id": self.remote_party})
            self.answered.set()
        elif typ == "m.call.select_answer":
            out("select_answer", selected_party_id=content.get("selected_party_id"))
        elif typ == "m.call.candidates":
            out("candidates", count=len(content.get("candidates") or []))
        elif typ in ("m.call.hangup", "m.call.reject"):
            reason = content.get("reason", "reject" if typ == "m.call.reject" else "")
            out("hangup", type=typ, reason=reason, party_id=content.get("party_id"))
            self.end("remote", reason)

    def end(self, by, reason):
        if not self.ended.is_set():
            self.ended_by, self.reason = by, reason
            self.ended.set()

    async def hangup(self, reason="user_hangup"):
        await self.send("m.call.hangup", {"reason": reason})
        out("hangup_sent", reason=reason)
        self.end("local", reason)

    async def sync_loop(self):
        while not self.ended.is_set():
            resp = await self.nio.sync(timeout=500, since=self.since)
            if not isinstance(resp, SyncResponse):
                out("error", what="sync", detail=str(resp))
                await asyncio.sleep(0.5)
                continue
            self.since = resp.next_batch
            for room_id in resp.rooms.invite:
                await self.nio.join(room_id)
            if self.args.room is None:
                # --answer in any room: the first m.call.invite picks it.
                for room_id, room in resp.rooms.join.items():
                    if any(getattr(ev, "type", "") == "m.call.invite" or
                           getattr(ev, "source", {}).get("type") == "m.call.invite" for ev in room.timeline.events):
                        self.args.room = room_id
                        out("room", room_id=room_id)
                        break
            room = resp.rooms.join.get(self.args.room) if self.args.room else None
            if room:
                for ev in room.timeline.events:
                    await self.on_event(ev)

    async def media_loop(self):
        await self.answered.wait()
        while not self.ended.is_set():
            await asyncio.sleep(1)
            out("media", frames=self.detector.frames, packets=await self.packets(),
                tone_ratio=round(self.detector.ratio(), 3))
            if self.args.hangup_after > 0 and self.detector.first is not None and \
                    time.monotonic() - self.detector.first >= self.args.hangup_after:
                await self.hangup()
                return

    async def packets(self):
        if self.pc is None:
            return 0
        total = 0
        for s in (await self.pc.getStats()).values():
            if getattr(s, "type", "") == "inbound-rtp":
                total += getattr(s, "packetsReceived", 0) or 0
        return total

    async def run(self):
        resp = await self.nio.login(self.args.password)
        if not isinstance(resp, LoginResponse):
            out("error", what="login", detail=str(resp))
            return 1
        first = await self.nio.sync(timeout=0)  # history is not ours to answer
        if isinstance(first, SyncResponse):
            self.since = first.next_batch
            for room_id in first.rooms.invite:
                await self.nio.join(room_id)
        out("ready", user_id=self.nio.user_id, party_id=self.party)
        sync = asyncio.ensure_future(self.sync_loop())
        if self.args.call:
            await self.place()
        media = asyncio.ensure_future(self.media_loop())
        try:
            await asyncio.wait_for(self.ended.wait(), self.args.timeout)
        except asyncio.TimeoutError:
            out("error", what="timeout")
            if self.call_id and not self.ended.is_set():
                await self.hangup()
        packets = await self.packets()
        ratio = self.detector.ratio()
        out("result", call_id=self.call_id, packets_received=packets, frames=self.detector.frames,
            tone_ratio=round(ratio, 3), tone_detected=ratio >= self.args.threshold,
            control_ratio=round(self.detector.control_ratio(), 3),
            ended_by=self.ended_by, reason=self.reason)
        for t in [sync, media] + self.tasks:
            t.cancel()
        if self.pc:
            await self.pc.close()
        await self.nio.close()
        return 0 if self.ended_by else 1


def main():
    args = parse_args()
    if args.loopback:
        orig = aioice.ice.get_host_addresses

        def with_loopback(use_ipv4, use_ipv6):
            addrs = orig(use_ipv4, use_ipv6)
            if use_ipv4 and "127.0.0.1" not in addrs:
                addrs.append("127.0.0.1")
            return addrs

        aioice.ice.get_host_addresses = with_loopback
    sys.exit(asyncio.run(Client(args).run()))


if __name__ == "__main__":
    main()
