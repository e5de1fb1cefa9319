"""Starts a real server for Troupe's scale-out tests, on loopback, and stops it when
its standard input closes (the test process that started it ended, however it ended).

    python test_servers.py moto        # moto's S3 + SQS server
    python test_servers.py postgres    # Postgres with pgvector, from PyPI `pgserver`

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


def postgres():
    from pgserver._commands import POSTGRES_BIN_PATH

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
    run([str(bin_dir / "initdb"), "-D", data, "--auth=trust", "--encoding=utf8", "-U", "postgres"])
    port = free_port()
    options = f"-h 127.0.0.1 -p {port} -k {data} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
    run([str(bin_dir / "pg_ctl"), "-D", data, "-o", options, "-l", os.path.join(data, "log"), "-w", "start"])
    try:
        print(f"READY postgres://postgres@127.0.0.1:{port}/postgres", flush=True)
        wait_for_stdin_eof()
    finally:
        subprocess.run([str(bin_dir / "pg_ctl"), "-D", data, "-m", "immediate", "stop"], user=user,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    {"moto": moto, "postgres": postgres}[sys.argv[1]]()
