"""``bastionfl bench auth``: client CPU per handshake and Home Authority throughput, in-process and over HTTPS.

Prints one JSON object. ``handshake_ms`` is the client's CPU time (thread time) per full handshake;
``ha_auth_per_s`` is authentications per second of HA CPU time on one core (challenge + confirm, SQLite file in
WAL mode); ``http`` runs the real service (``bastionfl ha serve`` in a child process, TLS on loopback) and counts
complete handshakes per wall-clock second from one sequential FL server.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["run_auth_bench"]


def _handshakes(n: int, tmp: str) -> dict:
    from bastionfl.auth import AuthClient, AuthServer, HomeAuthority, LocalRelay, MemoryCredentialStore
    from bastionfl.auth import RateLimits, RoundContext

    unlimited = RateLimits(server_rate=1e9, server_burst=1e9, fast_rate=1e9, fast_burst=1e9)
    ha = HomeAuthority.open(os.path.join(tmp, "bench.db"), os.urandom(32), limits=unlimited)
    clients = [AuthClient(MemoryCredentialStore(ha.enroll(f"c{i}", ["S"]))) for i in range(16)]
    server = AuthServer("S", LocalRelay(ha, "S"))
    relay_cpu = client_cpu = 0.0
    sizes: dict[str, int] = {}
    t_wall = time.perf_counter()
    for i in range(n):
        c = clients[i % len(clients)]
        ctx = RoundContext(1, i, i % len(clients), int(time.time()) + 120)
        hs = server.begin(ctx)
        a = time.thread_time()
        m1 = c.start("S", ctx)
        b = time.thread_time()
        m2 = hs.challenge(m1)
        d = time.thread_time()
        m3 = c.respond(m2)
        e = time.thread_time()
        m4 = hs.confirm(m3)
        f = time.thread_time()
        out = c.finish(m4)
        g = time.thread_time()
        if hs.accept(out.ack) is None or out.session is None:
            raise RuntimeError("benchmark handshake failed")
        client_cpu += (b - a) + (e - d) + (g - f)
        relay_cpu += (d - b) + (f - e)
        sizes = {"msg1": len(m1), "msg2": len(m2), "msg3": len(m3), "msg4": len(m4), "ack": len(out.ack)}
    wall = time.perf_counter() - t_wall
    # the HA alone: challenge + confirm CPU without the FL server's small share (HXRES, TH, SCONF/ACK checks)
    ha_cpu = 0.0
    for i in range(n):
        c = clients[i % len(clients)]
        ctx = RoundContext(2, i, i % len(clients), int(time.time()) + 120)
        m1 = c.start("S", ctx)
        a = time.thread_time()
        reply = ha.challenge("S", ctx, m1)
        ha_cpu += time.thread_time() - a
        m3 = c.respond(reply.msg2)
        a = time.thread_time()
        ok = ha.confirm("S", reply.sid, m3).ok
        ha_cpu += time.thread_time() - a
        if not ok:
            raise RuntimeError("benchmark confirm failed")
        c.finish(os.urandom(32))
    ha.store.close()
    return {
        "handshake_ms": round(client_cpu / n * 1e3, 4),
        "ha_auth_per_s": round(n / ha_cpu, 1),
        "server_plus_ha_auth_per_s": round(n / relay_cpu, 1),
        "full_handshake_wall_ms": round(wall / n * 1e3, 4),
        "sizes": sizes,
    }


def _kp(n: int) -> dict:
    from bastionfl.auth import AuthServer, RoundContext
    from bastionfl.research.kpseudonym import VariableKPseudonymAuthority, VariableKRelay

    ha = VariableKPseudonymAuthority(8)
    clients = [ha.enroll(["S"]) for _ in range(8)]
    server = AuthServer("S", VariableKRelay(ha, "S"), msg1_len=66)
    client_cpu = 0.0
    for i in range(n):
        c = clients[i % 8]
        ctx = RoundContext(1, i, i % 8, int(time.time()) + 120)
        hs = server.begin(ctx)
        a = time.thread_time()
        m1 = c.start("S", ctx)
        client_cpu += time.thread_time() - a
        m2 = hs.challenge(m1)
        a = time.thread_time()
        m3 = c.respond(m2)
        client_cpu += time.thread_time() - a
        m4 = hs.confirm(m3)
        a = time.thread_time()
        ack, session = c.finish(m4)
        client_cpu += time.thread_time() - a
        if session is None or hs.accept(ack) is None:
            raise RuntimeError("k-pseudonym benchmark handshake failed")
    return {"k": 8, "handshake_ms": round(client_cpu / n * 1e3, 4), "msg1": len(m1)}


def _self_signed(directory: str) -> tuple[str, str]:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bastionfl-ha-bench")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = os.path.join(directory, "ha.crt"), os.path.join(directory, "ha.key")
    Path(cert_path).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


def _proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux /proc), or None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _http(n: int, tmp: str, concurrency: int) -> dict:
    import contextlib
    import io

    from bastionfl.auth import AuthClient, AuthError, AuthServer, FileCredentialStore, MemoryCredentialStore
    from bastionfl.auth import RoundContext
    from bastionfl.auth import HttpRelay
    from bastionfl.cli.ha import main as ha_main

    cert, key = _self_signed(tmp)
    common = ["--db", os.path.join(tmp, "http.db"), "--kek-file", os.path.join(tmp, "kek")]
    creds = []
    for i in range(16):
        path = os.path.join(tmp, f"c{i}.cred")
        with contextlib.redirect_stdout(io.StringIO()):
            rc = ha_main(["enroll", *common, "--label", f"c{i}", "--server", "S", "--out", path])
        if rc != 0:
            raise RuntimeError("enrolment failed")
        creds.append(path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token_file = os.path.join(tmp, "S.token")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bastionfl.cli.ha", "serve", *common, "--cert", cert, "--key", key,
         "--port", str(port), "--server", f"S={token_file}", "--server-rate", "1000000", "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        relay = None
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if os.path.exists(token_file):
                    relay = HttpRelay(f"https://127.0.0.1:{port}", Path(token_file).read_text().strip(),
                                      verify=cert)
                    relay.confirm(bytes(16), bytes(32))
                    break
            except AuthError:
                relay = None
            time.sleep(0.1)
        if relay is None:
            raise RuntimeError("HA service did not start")
        relay.close()
        # credentials loaded from the enrolled files, kept in memory: the figure is about the HA and the wire
        clients = [AuthClient(MemoryCredentialStore(FileCredentialStore(p).load())) for p in creds]
        url, token = f"https://127.0.0.1:{port}", Path(token_file).read_text().strip()

        def worker(w: int, count: int) -> None:
            relay_w = HttpRelay(url, token, verify=cert)
            server = AuthServer("S", relay_w)
            mine = clients[w::concurrency]
            for i in range(count):
                c = mine[i % len(mine)]
                ctx = RoundContext(1, i, w, int(time.time()) + 120)
                hs = server.begin(ctx)
                out = c.finish(hs.confirm(c.respond(hs.challenge(c.start("S", ctx)))))
                if out.session is None or hs.accept(out.ack) is None:
                    errors.append("HTTP benchmark handshake failed")
            relay_w.close()

        errors: list[str] = []
        per = max(1, n // concurrency)
        threads = [threading.Thread(target=worker, args=(w, per)) for w in range(concurrency)]
        cpu0 = _proc_cpu_s(proc.pid)
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        n = per * concurrency
        if errors:
            raise RuntimeError(errors[0])
        wall = time.perf_counter() - t0
        cpu1 = _proc_cpu_s(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    return {
        "n": n,
        "concurrency": concurrency,
        "ha_auth_per_s_http": round(n / wall, 1),
        "http_handshake_wall_ms": round(wall / n * 1e3, 3),
        "ha_service_auth_per_cpu_s": None if cpu0 is None or cpu1 is None or cpu1 <= cpu0
        else round(n / (cpu1 - cpu0), 1),
        "note": "HA in its own process (bastionfl ha serve); `concurrency` FL-server threads, keep-alive TLS on loopback",
    }




def run_auth_bench(n: int, http_n: int, http_concurrency: int) -> dict[str, Any]:
    """Handshake CPU time, in-process HA throughput, the k-pseudonym profile and (``http_n > 0``) the HTTPS service."""
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        result: dict[str, Any] = {"bench": "auth", "n": n, **_handshakes(n, tmp)}
        result["k_pseudonym"] = _kp(min(n, 1000))
        if http_n:
            result["http"] = _http(http_n, tmp, http_concurrency)
    result["bars"] = {
        "handshake_ms_max": 1.0,
        "ha_auth_per_s_min": 1000.0,
        "handshake_ok": result["handshake_ms"] <= 1.0,
        "ha_ok": result["ha_auth_per_s"] >= 1000.0,
    }
    result["machine"] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }
    return result
