"""A real S3-protocol server on 127.0.0.1 for the tests: moto's server in its own process.

It checks credentials like S3 does: an IAM user with an access key and an s3:* policy is created,
then moto's request authentication is switched on, so a wrong key is refused with a real
``InvalidAccessKeyId`` and a wrong secret with ``SignatureDoesNotMatch``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REGION = "us-east-1"
ALL = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
# A key that may read: the IAM actions S3 checks (HeadObject and GetObject need s3:GetObject, listing
# s3:ListBucket), and the operation names moto 5.2.6 and later checks instead for the same requests
# (s3:HeadObject, s3:ListObjectsV2): without them moto refuses this key's HEAD and listing, where S3
# answers 404 and the list.
READ = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": [
                "s3:GetObject",
                "s3:ListBucket",
                "s3:GetBucketLocation",
                "s3:HeadObject",
                "s3:ListObjectsV2",
                "s3:HeadBucket",
            ],
            "Resource": "*",
        }
    ],
}


@dataclass
class S3Server:
    endpoint: str  # http://127.0.0.1:PORT
    port: int
    access_key_id: str  # may read and write every bucket
    secret_access_key: str
    reader: tuple[str, str]  # (key id, secret) that may only read
    proc: subprocess.Popen[bytes]
    log: Path

    def env(self, key: tuple[str, str] | None = None) -> dict[str, str]:
        """The standard AWS variables a user (or a server's hook) would have: this server's key
        (or ``key``, e.g. the reader's or a wrong one)."""
        key_id, secret = key or (self.access_key_id, self.secret_access_key)
        return {
            "AWS_ACCESS_KEY_ID": key_id,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
        )

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key under ``prefix`` in ``bucket``."""
        paginator = self.client().get_paginator("list_objects_v2")
        return sorted(
            o["Key"] for page in paginator.paginate(Bucket=bucket, Prefix=prefix) for o in page.get("Contents", [])
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(folder: Path) -> S3Server:
    """Start moto's S3 server on a free port of 127.0.0.1, with authentication on."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = folder / "moto.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with open(log, "wb") as out:  # the child keeps its own copy of the file
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=1):
                break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"moto server exited: {log.read_text()}") from None
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"moto server did not start: {log.read_text()}") from None
            time.sleep(0.2)
    try:
        key_id, secret = _user_with_key(endpoint, "kgit-tests", ALL)
        reader = _user_with_key(endpoint, "kgit-reader", READ)
        # from now on every request must be signed by a key moto's IAM knows, as on real S3
        req = urllib.request.Request(
            f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            json.loads(resp.read())
    except Exception:
        proc.kill()
        raise
    return S3Server(endpoint, port, key_id, secret, reader, proc, log)


def _user_with_key(endpoint: str, user: str, policy: Mapping[str, object]) -> tuple[str, str]:
    import boto3

    iam = boto3.client(
        "iam",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="bootstrap",
        aws_secret_access_key="bootstrap",
    )
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return str(key["AccessKeyId"]), str(key["SecretAccessKey"])


class DyingProxy:
    """A TCP proxy in front of the server that goes away at the first upload (an HTTP PUT): it stops
    listening and drops every connection, as a server that becomes unreachable in the middle of a
    push. Reads (HEAD, GET, LIST) pass until then."""

    def __init__(self, target_port: int) -> None:
        import threading

        self.target_port = target_port
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = int(self.listener.getsockname()[1])
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.died = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._spawn(self._accept)

    def _spawn(self, target, *args) -> None:  # type: ignore[no-untyped-def]
        import threading

        t = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(t)
        t.start()

    def _accept(self) -> None:
        while not self.died.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            self._spawn(self._pipe, client, upstream, True)
            self._spawn(self._pipe, upstream, client, False)

    def _pipe(self, src: socket.socket, dst: socket.socket, watch: bool) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data:
                break
            if watch and b"PUT /" in data:
                self.die()
                return
            try:
                dst.sendall(data)
            except OSError:
                return
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def die(self) -> None:
        self.died.set()
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() waiting in its thread
        except OSError:
            pass
        self.listener.close()
        with self._lock:
            for s in self._sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self) -> None:
        self.die()
        for t in self._threads:
            t.join(timeout=5)
