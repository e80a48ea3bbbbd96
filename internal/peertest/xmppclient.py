"""A real XMPP client (slixmpp) that Parley's tests drive over JSON lines.

Usage: python3 xmppclient.py JID PASSWORD HOST PORT

Prints one JSON object per line on stdout:
  {"ev": "online"}
  {"ev": "message", "from": ..., "id": ..., "body": ..., "nick": ...}
  {"ev": "groupchat", "from": ..., "room": ..., "nick": ..., "id": ..., "sid": ..., "body": ..., "delayed": bool}
      (sid: the room's stanza-id, XEP-0359, when the room gives one)
  {"ev": "joined", "from": ..., "room": ..., "nick": ...}      (our own presence in a room, status 110)
  {"ev": "subject", "from": ..., "room": ..., "nick": ..., "body": subject, "delayed": bool}
  {"ev": "configured", "room": ...} or {"ev": "error", "from": room, "condition": ...}
  {"ev": "error", "from": ..., "id": ..., "condition": ..., "text": ...}   (an error message)
  {"ev": "presence-error", "from": ..., "id": ..., "condition": ..., "text": ...}   (a refused join, say)
  {"ev": "receipt", "from": ..., "id": ...}
  {"ev": "presence", "from": ..., "type": ..., "show": ..., "status": ...}
  {"ev": "disconnected"}
Reads commands from stdin:
  {"cmd": "send", "to": ..., "id": ..., "body": ..., "receipt": true}
  {"cmd": "presence", "show": "away", "status": "..."}   (show "" = available, "unavailable")
  {"cmd": "subscribe", "to": ...}
  {"cmd": "join", "room": ..., "nick": ..., "history": n} (XEP-0045, the last n posts; no history without n)
  {"cmd": "join", "room": ..., "nick": ..., "since": ...} (XEP-0045; history since the XEP-0082 time)
  {"cmd": "groupchat", "room": ..., "id": ..., "body": ...}
  {"cmd": "subject", "room": ..., "subject": ...}       (XEP-0045 §8.1: change the room's subject)
  {"cmd": "nick", "room": ..., "nick": ...}             (XEP-0045 §7.6: change nick in a room)
  {"cmd": "leave", "room": ..., "nick": ..., "status": ...}
  {"cmd": "configure", "room": ..., "whois": "anyone", "changesubject": true, "persistent": true}
                                                        (owner: real JIDs shown to all; occupants may change the
                                                         subject; the room kept across restarts)
Subscription requests to this client are approved automatically.
  {"cmd": "quit"}
"""
import json
import os
import sys

import slixmpp
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import StanzaPath

RECEIPTS = "urn:xmpp:receipts"
NICK = "http://jabber.org/protocol/nick"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
MUC = "http://jabber.org/protocol/muc"
MUC_USER = MUC + "#user"
MUC_OWNER = MUC + "#owner"
DATA = "jabber:x:data"
DELAY = "urn:xmpp:delay"
SID = "urn:xmpp:sid:0"


def error_of(xml):
    """Returns the condition and text of the <error/> in the stanza xml."""
    cond, text = "", ""
    err = xml.find("{jabber:client}error")
    if err is not None:
        for child in err:
            tag = child.tag.split("}")[-1]
            if child.tag.startswith("{" + STANZAS) and tag != "text":
                cond = tag
            elif tag == "text":
                text = child.text or ""
    return cond, text


def emit(**kw):
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password)
        self.pending = b""
        self["feature_mechanisms"].unencrypted_plain = True
        self.add_event_handler("session_start", self.start)
        self.add_event_handler("disconnected", lambda _: emit(ev="disconnected"))
        # The "message" event only fires for stanzas with a body; receipts
        # and errors have none, so take every <message/> raw.
        self.register_handler(Callback("all messages", StanzaPath("message"), self.on_message))
        self.register_handler(Callback("all presence", StanzaPath("presence"), self.on_presence))
        self.auto_authorize = True
        self.auto_subscribe = True

    async def start(self, _):
        self.send_presence()
        await self.get_roster()
        self.loop.add_reader(sys.stdin.fileno(), self.on_stdin)
        emit(ev="online")

    def on_message(self, msg):
        xml = msg.xml
        frm = str(msg["from"])
        if msg["type"] == "error":
            cond, text = error_of(xml)
            emit(ev="error", **{"from": frm}, id=msg["id"], condition=cond, text=text)
            return
        if msg["type"] == "groupchat":
            subject = xml.find("{jabber:client}subject")
            if subject is not None and not msg["body"]:
                emit(ev="subject", **{"from": frm}, room=msg["from"].bare,
                     nick=msg["from"].resource, body=subject.text or "",
                     delayed=xml.find("{%s}delay" % DELAY) is not None)
            if msg["body"]:
                sid = ""
                for s in xml.findall("{%s}stanza-id" % SID):
                    if s.get("by") == msg["from"].bare:
                        sid = s.get("id", "")
                emit(ev="groupchat", **{"from": frm}, room=msg["from"].bare,
                     nick=msg["from"].resource, id=msg["id"], sid=sid, body=msg["body"],
                     delayed=xml.find("{%s}delay" % DELAY) is not None)
            return
        received = xml.find("{%s}received" % RECEIPTS)
        if received is not None:
            emit(ev="receipt", **{"from": frm}, id=received.get("id", ""))
        body = msg["body"]
        if body:
            nick = xml.find("{%s}nick" % NICK)
            emit(ev="message", **{"from": frm}, id=msg["id"], body=body,
                 nick=(nick.text if nick is not None else ""))

    def on_presence(self, pres):
        if pres["type"] == "error":
            cond, text = error_of(pres.xml)
            emit(ev="presence-error", **{"from": str(pres["from"])}, id=pres["id"], condition=cond, text=text)
        x = pres.xml.find("{%s}x" % MUC_USER)
        if x is not None and pres["type"] != "unavailable" and any(
                st.get("code") == "110" for st in x.findall("{%s}status" % MUC_USER)):
            emit(ev="joined", **{"from": str(pres["from"])}, room=pres["from"].bare,
                 nick=pres["from"].resource)
        emit(ev="presence", **{"from": str(pres["from"])}, type=pres["type"],
             show=pres["show"], status=pres["status"])

    async def configure(self, room, whois, changesubject=None, persistent=False):
        iq = self.make_iq_set(ito=room)
        query = ET.Element("{%s}query" % MUC_OWNER)
        form = ET.SubElement(query, "{%s}x" % DATA)
        form.set("type", "submit")
        fields = [("FORM_TYPE", MUC + "#roomconfig"), ("muc#roomconfig_whois", whois)]
        if changesubject is not None:
            fields.append(("muc#roomconfig_changesubject", "1" if changesubject else "0"))
        if persistent:
            fields.append(("muc#roomconfig_persistentroom", "1"))
        for var, value in fields:
            field = ET.SubElement(form, "{%s}field" % DATA)
            field.set("var", var)
            ET.SubElement(field, "{%s}value" % DATA).text = value
        iq.append(query)
        try:
            await iq.send(timeout=10)
        except Exception as e:  # an IqError or a timeout: report it
            cond = ""
            try:
                cond = e.iq["error"]["condition"]
            except Exception:
                cond = type(e).__name__
            emit(ev="error", **{"from": room}, id=iq["id"], condition=cond, text=str(e))
            return
        emit(ev="configured", room=room)

    def on_stdin(self):
        # Read what is there and act on every complete line: several
        # commands may arrive in one read, and the fd will not become
        # readable again for the ones left in a buffer.
        data = os.read(sys.stdin.fileno(), 1 << 16)
        if not data:
            self.loop.remove_reader(sys.stdin.fileno())
            self.disconnect()
            return
        self.pending += data
        *lines, self.pending = self.pending.split(b"\n")
        for line in lines:
            if line.strip():
                self.run(json.loads(line))

    def run(self, cmd):
        if cmd["cmd"] == "quit":
            self.disconnect()
            return
        if cmd["cmd"] == "presence":
            if cmd.get("show") == "unavailable":
                self.send_presence(ptype="unavailable", pstatus=cmd.get("status") or None)
            else:
                self.send_presence(pshow=cmd.get("show") or None, pstatus=cmd.get("status") or None)
            return
        if cmd["cmd"] == "join":
            pres = self.make_presence(pto="%s/%s" % (cmd["room"], cmd["nick"]))
            x = ET.Element("{%s}x" % MUC)
            hist = ET.SubElement(x, "{%s}history" % MUC)
            if cmd.get("since"):
                hist.set("since", cmd["since"])
            else:
                hist.set("maxstanzas", str(cmd.get("history", 0)))
            pres.append(x)
            pres.send()
            return
        if cmd["cmd"] == "nick":
            self.make_presence(pto="%s/%s" % (cmd["room"], cmd["nick"])).send()
            return
        if cmd["cmd"] == "leave":
            self.make_presence(pto="%s/%s" % (cmd["room"], cmd["nick"]), ptype="unavailable",
                               pstatus=cmd.get("status") or None).send()
            return
        if cmd["cmd"] == "groupchat":
            msg = self.make_message(mto=cmd["room"], mbody=cmd["body"], mtype="groupchat")
            msg["id"] = cmd["id"]
            msg.send()
            return
        if cmd["cmd"] == "subject":
            msg = self.make_message(mto=cmd["room"], mtype="groupchat")
            ET.SubElement(msg.xml, "{jabber:client}subject").text = cmd["subject"]
            msg.send()
            return
        if cmd["cmd"] == "configure":
            self.loop.create_task(self.configure(cmd["room"], cmd.get("whois", "anyone"), cmd.get("changesubject"),
                                                 cmd.get("persistent", False)))
            return
        if cmd["cmd"] == "subscribe":
            self.send_presence_subscription(pto=cmd["to"])
            return
        msg = self.make_message(mto=cmd["to"], mbody=cmd["body"], mtype="chat")
        msg["id"] = cmd["id"]
        if cmd.get("receipt"):
            msg.append(ET.Element("{%s}request" % RECEIPTS))
        msg.send()


def main():
    jid, password, host, port = sys.argv[1:5]
    c = Client(jid, password)
    c.connect(address=(host, int(port)), force_starttls=False, disable_starttls=True)
    c.add_event_handler("disconnected", lambda _: c.loop.stop())
    c.loop.run_forever()


if __name__ == "__main__":
    main()
