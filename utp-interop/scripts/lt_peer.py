#!/usr/bin/python3
"""A libtorrent-rasterbar 2.0 peer for the uTP interop tests, driven over stdin/stdout.

Run it with Debian's /usr/bin/python3 (python3-libtorrent is built for it). argv[1] is a JSON
object:

    {"torrent": PATH, "save_path": DIR, "seed": bool, "listen": "IP:PORT",
     "connect": [IP, PORT] or null, "settings": {extra settings_pack keys}}

The session is uTP only (TCP disabled both ways) and plaintext only (pe_disabled). Events go
to stdout, one JSON object per line, flushed at once:

    {"event": "listening", "port": N}         the session listens (port 0 picks one)
    {"event": "ready"}                          the torrent is checked (seed) or added
    {"event": "connect", "ip":, "port":, "utp": bool, "message":}   peer_connect_alert
    {"event": "disconnect", "ip":, "port":, "reason": N, "error":, "message":}
    {"event": "peer", "ip":, "port":, "utp": bool, "up":, "down":, "flags":}  each new peer
    {"event": "finished", "seconds": s}        a download completed (is_seeding)
    {"event": "status", ...}                   answer to "status"
    {"event": "stats", "values": {...}}         answer to "stats": session counters (utp.*, ...)
    {"event": "error", "message":}              an error alert

Commands come on stdin, one JSON object per line: {"cmd": "connect", "ip":, "port":},
{"cmd": "status"}, {"cmd": "stats"}, {"cmd": "pause"} (disconnects every peer), {"cmd":
"quit"}. EOF on stdin quits too.
"""

import json
import queue
import sys
import threading
import time

import libtorrent as lt

UTP_SOCKET = 1 << 17  # peer_info::utp_socket; the binding does not export it


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def endpoint(ep):
    try:
        return str(ep[0]), int(ep[1])
    except Exception:  # noqa: BLE001 - the binding's endpoint type varies
        return str(ep), 0


def main():
    cfg = json.loads(sys.argv[1])
    settings = {
        "listen_interfaces": cfg.get("listen", "127.0.0.1:0"),
        "enable_outgoing_tcp": False,
        "enable_incoming_tcp": False,
        "enable_outgoing_utp": True,
        "enable_incoming_utp": True,
        "out_enc_policy": 2,  # pe_disabled
        "in_enc_policy": 2,
        "allowed_enc_level": 1,  # plaintext
        "prefer_rc4": False,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "listen_system_port_fallback": False,
        "allow_multiple_connections_per_ip": True,
        "alert_mask": lt.alert_category.error
        | lt.alert_category.peer
        | lt.alert_category.status
        | lt.alert_category.connect
        | lt.alert_category.storage,
    }
    settings.update(cfg.get("settings") or {})
    ses = lt.session(settings)

    commands = queue.Queue()

    def read_stdin():
        for line in sys.stdin:
            line = line.strip()
            if line:
                commands.put(json.loads(line))
        commands.put({"cmd": "quit"})

    threading.Thread(target=read_stdin, daemon=True).start()

    deadline = time.time() + 10
    while ses.listen_port() == 0 and time.time() < deadline:
        ses.wait_for_alert(50)
        ses.pop_alerts()
    emit({"event": "listening", "port": ses.listen_port()})

    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(cfg["torrent"])
    atp.save_path = cfg["save_path"]
    h = ses.add_torrent(atp)
    h.replace_trackers([])
    # Wait for the check to finish: a torrent still checking drops incoming connections.
    ready = (lt.torrent_status.seeding, lt.torrent_status.downloading, lt.torrent_status.finished)
    deadline = time.time() + 30
    while h.status().state not in ready and time.time() < deadline:
        ses.wait_for_alert(50)
        pump(ses)
    if cfg.get("seed") and not h.status().is_seeding:
        emit({"event": "error", "message": "seed data failed the hash check"})
    # Until its next tick (1 s) the session has no "active" torrent and answers an incoming
    # SYN with a FIN (the connection is refused after the uTP handshake).
    deadline = time.time() + 1.1
    while time.time() < deadline:
        ses.wait_for_alert(50)
        pump(ses)
    emit({"event": "ready"})
    if cfg.get("connect"):
        ip, port = cfg["connect"]
        h.connect_peer((ip, int(port)))

    started = time.time()
    finished = bool(cfg.get("seed"))
    seen = set()
    while True:
        ses.wait_for_alert(20)
        pump(ses)
        try:
            while True:
                cmd = commands.get_nowait()
                name = cmd.get("cmd")
                if name == "quit":
                    emit({"event": "bye"})
                    return
                if name == "connect":
                    h.connect_peer((cmd["ip"], int(cmd["port"])))
                elif name == "pause":
                    h.pause()
                elif name == "status":
                    emit(status(h))
                elif name == "stats":
                    emit(stats(ses))
        except queue.Empty:
            pass
        for p in h.get_peer_info():
            ip, port = endpoint(p.ip)
            key = (ip, port)
            if key not in seen:
                seen.add(key)
                emit(peer_event(p))
        if not finished and h.status().is_seeding:
            finished = True
            emit({"event": "finished", "seconds": time.time() - started})


def peer_event(p):
    ip, port = endpoint(p.ip)
    return {
        "event": "peer",
        "ip": ip,
        "port": port,
        "utp": bool(int(p.flags) & UTP_SOCKET),
        "up": p.total_upload,
        "down": p.total_download,
        "flags": int(p.flags),
        "client": p.client if isinstance(p.client, str) else p.client.decode("utf8", "replace"),
    }


def status(h):
    s = h.status()
    return {
        "event": "status",
        "progress": s.progress,
        "is_seeding": s.is_seeding,
        "total_done": s.total_done,
        "state": str(s.state),
        "peers": [peer_event(p) for p in h.get_peer_info()],
    }


def stats(ses):
    ses.post_session_stats()
    deadline = time.time() + 5
    while time.time() < deadline:
        ses.wait_for_alert(100)
        for a in ses.pop_alerts():
            if isinstance(a, lt.session_stats_alert):
                values = {k: v for k, v in a.values.items() if k.startswith(("utp.", "net.", "peer."))}
                return {"event": "stats", "values": values}
            handle(a)
    return {"event": "error", "message": "no session_stats_alert"}


def pump(ses):
    for a in ses.pop_alerts():
        handle(a)


def handle(a):
    if isinstance(a, lt.peer_connect_alert):
        ip, port = endpoint(a.endpoint)
        msg = a.message()
        emit({"event": "connect", "ip": ip, "port": port, "utp": "uTP" in msg, "message": msg})
    elif isinstance(a, lt.peer_disconnected_alert):
        ip, port = endpoint(a.endpoint)
        try:
            reason = int(a.reason)
        except TypeError:  # the binding cannot convert close_reason_t
            reason = None
        emit(
            {
                "event": "disconnect",
                "ip": ip,
                "port": port,
                "reason": reason,
                "error": a.error.message(),
                "message": a.message(),
            }
        )
    elif isinstance(a, lt.incoming_connection_alert):
        ip, port = endpoint(a.endpoint)
        emit({"event": "incoming", "ip": ip, "port": port, "message": a.message()})
    elif isinstance(a, (lt.peer_error_alert, lt.torrent_error_alert, lt.listen_failed_alert)):
        emit({"event": "error", "message": a.message()})


if __name__ == "__main__":
    main()
