"""A real OpenSSH server on 127.0.0.1 for the tests, with its own host key and one client key."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@dataclass
class SshServer:
    host: str
    port: int
    user: str
    client_key: Path
    known_hosts_line: str
    proc: subprocess.Popen[bytes]
    log: Path

    def url(self, path: Path) -> str:
        return f"ssh://{self.user}@{self.host}:{self.port}{path}"

    def trust(self, home: Path) -> None:
        """What a user does once per machine: trust the server's host key."""
        ssh = home / ".ssh"
        ssh.mkdir(parents=True, exist_ok=True)
        with open(ssh / "known_hosts", "a") as fh:
            fh.write(self.known_hosts_line + "\n")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(folder: Path) -> SshServer:
    if not os.path.exists(SSHD):
        raise RuntimeError("sshd is not installed: `apt-get install openssh-server` (scripts/setup.sh does it)")
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)], check=True)
    (folder / "authorized_keys").write_text((folder / "client_key.pub").read_text())
    os.chmod(folder / "authorized_keys", 0o600)
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation directory
    port = _free_port()
    config = folder / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_key'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPidFile {folder / 'sshd.pid'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
        "PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n"
        "Subsystem sftp internal-sftp\nMaxStartups 50\nMaxSessions 50\n"
    )
    log = folder / "sshd.log"
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=open(log, "wb"), stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {log.read_text()}") from None
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError(f"sshd did not start: {log.read_text()}")
    host_pub = (folder / "host_key.pub").read_text().split()
    return SshServer(
        "127.0.0.1",
        port,
        getpass.getuser(),
        folder / "client_key",
        f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}",
        proc,
        log,
    )
