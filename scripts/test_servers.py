"""Starts a real server for Troupe's scale-out tests, on loopback, and stops it when
its standard input closes (the test process that started it ended, however it ended).

    python test_servers.py moto        # moto's S3 + SQS server
    python test_servers.py postgres    # Postgres with pgvector, from PyPI `pgserver`
    python test_servers.py postgres --tls DIR
        # the same behind TLS only (DIR/server.crt, DIR/server.key: pgserver's build
        # has no TLS of its own, so a front speaking Postgres' SSLRequest terminates
        # it), with password authentication (user postgres, password PG_TLS_PASSWORD)

Prints one line, `READY <url>`, once the server accepts connections; logs go to stderr.
Run with the virtual environment `scripts/setup-scale-out.sh` makes.
"""

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading


def wait_for_stdin_eof():
    while sys.stdin.buffer.read(4096):
        pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def moto():
    import logging

    from moto.moto_server.threaded_moto_server import ThreadedMotoServer

    # One log line per request would bury the tests' own output.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    print(f"READY http://{host}:{port}", flush=True)
    wait_for_stdin_eof()
    server.stop()


PG_TLS_PASSWORD = "troupe-tls-test"


def postgres():
    from pgserver._commands import POSTGRES_BIN_PATH

    tls = sys.argv[3] if len(sys.argv) > 3 and sys.argv[2] == "--tls" else None

    bin_dir = POSTGRES_BIN_PATH
    data = tempfile.mkdtemp(prefix="troupe-pg-")
    user = None
    if os.geteuid() == 0:
        # initdb refuses to run as root: run the server as pgserver's own system user.
        from pgserver.utils import (ensure_folder_permissions,
                                    ensure_prefix_permissions,
                                    ensure_user_exists)
        import stat

        user = "pgserver"
        ensure_user_exists(user)
        ensure_prefix_permissions(bin_dir)
        ensure_folder_permissions(bin_dir, stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(bin_dir.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
        os.chmod(data, 0o700)
        entry = pwd.getpwnam(user)
        os.chown(data, entry.pw_uid, entry.pw_gid)
    run = lambda args, **kw: subprocess.run(args, check=True, user=user, stdout=sys.stderr, **kw)
    initdb = [str(bin_dir / "initdb"), "-D", data, "--auth=trust", "--encoding=utf8", "-U", "postgres"]
    if tls:
        pwfile = os.path.join(data, "..", os.path.basename(data) + ".pw")
        with open(pwfile, "w") as f:
            f.write(PG_TLS_PASSWORD + "\n")
        if user:
            os.chown(pwfile, pwd.getpwnam(user).pw_uid, -1)
        initdb += [f"--pwfile={pwfile}"]
    run(initdb)
    port = free_port()
    options = f"-h 127.0.0.1 -p {port} -k {data} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
    if tls:
        os.remove(pwfile)
        # Password authentication over TCP (the TLS front below is the only way in).
        with open(os.path.join(data, "pg_hba.conf"), "w") as f:
            f.write("local all all trust\n"
                    "host all all 127.0.0.1/32 scram-sha-256\n")
    try:
        run([str(bin_dir / "pg_ctl"), "-D", data, "-o", options, "-l", os.path.join(data, "log"), "-w", "start"])
    except subprocess.CalledProcessError:
        with open(os.path.join(data, "log")) as f:
            sys.stderr.write(f.read())
        raise
    if tls:
        port = tls_front(port, tls)
    try:
        print(f"READY postgres://postgres@127.0.0.1:{port}/postgres", flush=True)
        wait_for_stdin_eof()
    finally:
        subprocess.run([str(bin_dir / "pg_ctl"), "-D", data, "-m", "immediate", "stop"], user=user,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(data, ignore_errors=True)


def tls_front(backend_port, cert_dir):
    """Postgres' own TLS, in front of a server built without it (pgserver's): answers a
    client's SSLRequest with 'S', completes the TLS handshake with the certificate in
    `cert_dir`, then relays the session to the server. A client that starts without
    TLS gets the error a server with `hostnossl ... reject` (RDS's rds.force_ssl)
    sends. Returns the port it listens on."""
    import asyncio
    import ssl
    import struct

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(cert_dir, "server.crt"), os.path.join(cert_dir, "server.key"))
    ssl_request, gss_request = 80877103, 80877104

    def refusal():
        fields = (b"SFATAL\0VFATAL\0C28000\0"
                  b"Mno pg_hba.conf entry for host \"127.0.0.1\", user \"postgres\", database \"postgres\", no encryption\0\0")
        return b"E" + struct.pack("!I", len(fields) + 4) + fields

    async def relay(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def handle(reader, writer):
        try:
            while True:
                length, code = struct.unpack("!II", await reader.readexactly(8))
                if length == 8 and code == gss_request:
                    writer.write(b"N")
                    await writer.drain()
                    continue
                break
            if length != 8 or code != ssl_request:
                writer.write(refusal())
                await writer.drain()
                writer.close()
                return
            writer.write(b"S")
            await writer.drain()
            await writer.start_tls(ctx)
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", backend_port)
            await asyncio.gather(relay(reader, up_writer), relay(up_reader, writer))
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            writer.close()

    ready = threading.Event()
    front = {}

    def serve():
        loop = asyncio.new_event_loop()
        server = loop.run_until_complete(asyncio.start_server(handle, "127.0.0.1", 0))
        front["port"] = server.sockets[0].getsockname()[1]
        ready.set()
        loop.run_forever()

    threading.Thread(target=serve, daemon=True).start()
    ready.wait()
    return front["port"]


if __name__ == "__main__":
    {"moto": moto, "postgres": postgres}[sys.argv[1]]()
