"""One grading kernel: started (in the sandbox, see :mod:`mmcourse.grading.sandbox`), fed cells, and killed.

The grader talks to the kernel with jupyter_client over IPC sockets in a private connection folder; it
starts the process itself (no kernelspec lookup, so what runs is exactly :meth:`Policy.kernel_command`).
Everything the kernel sends is untrusted: a cell's captured output is capped (``OUTPUT_LIMIT``), no single
message may exceed ``MAX_MESSAGE_BYTES`` (zmq drops it), and a cell ends when its time is up whatever
the kernel says. Closing a kernel kills its whole sandbox and waits until every process in it is gone.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from queue import Empty

from mmcourse.grading.sandbox import Policy

OUTPUT_LIMIT = 1_000_000  # characters of stream output kept per cell; more is "flooding"
MAX_MESSAGE_BYTES = 16 << 20  # zmq drops a larger message from the kernel (bounds the grader's memory)
IOPUB_GRACE = 2.0  # seconds to wait for a cell's last output after its reply
STARTUP_TIMEOUT = 60
POLL_SECONDS = 0.25
CHANNELS = ("shell", "iopub")


class KernelStartError(RuntimeError):
    """The grading kernel did not start (an installation or sandbox problem, not the student's)."""


@dataclass
class CellRun:
    """What running one cell gave. ``status``: ok | error | timeout | died."""

    status: str
    text: str = ""  # stream output, at most OUTPUT_LIMIT characters
    error: str = ""  # "Name: message" when status == "error"
    flooded: bool = False  # the cell printed more than OUTPUT_LIMIT characters
    seconds: float = 0.0


class _Output:
    """Stream text of one cell, kept up to ``limit`` characters."""

    def __init__(self, limit: int) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.limit = limit
        self.flooded = False

    def add(self, text: object) -> None:
        if not isinstance(text, str) or self.flooded:
            return
        room = self.limit - self.size
        if len(text) > room:
            self.flooded = True
            text = text[:room]
        self.parts.append(text)
        self.size += len(text)

    @property
    def text(self) -> str:
        return "".join(self.parts)


def runtime_base(policy: Policy) -> Path:
    """A folder for connection folders, outside everything the sandbox binds read-only."""
    base = tempfile.gettempdir()
    if any(base == r or base.startswith(r.rstrip("/") + "/") for r in policy.readonly):
        base = "/tmp"
    return Path(base)


class Kernel:
    """A started grading kernel; use as a context manager (closing kills it and its sandbox)."""

    def __init__(self, policy: Policy, base: Path | None = None, startup_timeout: float = STARTUP_TIMEOUT) -> None:
        self.policy = policy
        self.runtime = Path(tempfile.mkdtemp(prefix="kernel-", dir=base or runtime_base(policy)))
        self.proc: subprocess.Popen | None = None
        self.client = None
        self.monitors: dict = {}  # channel name -> zmq monitor socket
        self.reaper: int | None = None  # the sandbox's PID 1, seen from outside
        try:
            self._start(startup_timeout)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> "Kernel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------- start

    def _start(self, startup_timeout: float) -> None:
        import zmq
        from jupyter_client import BlockingKernelClient
        from jupyter_client.connect import write_connection_file

        uid = self.policy.kernel_uid()
        connection = self.runtime / "connection.json"
        write_connection_file(str(connection), transport="ipc", ip=str(self.runtime / "ipc"),
                              key=secrets.token_hex(32).encode(), signature_scheme="hmac-sha256")
        if uid is not None:  # the kernel runs as its own uid: give it its folder (nobody else can enter)
            os.chown(self.runtime, uid, uid)
            os.chown(connection, uid, uid)
        self.runtime.chmod(0o700)
        scratch = self.runtime / "home"
        if not self.policy.enabled:
            scratch.mkdir()
        argv = self.policy.kernel_command(self.runtime, connection, uid)
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                cwd=scratch if not self.policy.enabled else self.runtime, start_new_session=True,
                env=self.policy.kernel_env(scratch) if not self.policy.enabled else {"PATH": os.environ.get("PATH", "")},
            )
        except OSError as err:
            raise KernelStartError(f"could not start the grading kernel: {err}") from None
        context = zmq.Context()
        context.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        context.setsockopt(zmq.LINGER, 0)
        self.client = BlockingKernelClient(context=context)
        self.client.load_connection_file(str(connection))
        self.client.start_channels(shell=True, iopub=True, stdin=False, hb=False, control=False)
        self._watch(CHANNELS)
        if not self._handshake(startup_timeout):
            if not self.alive():
                raise KernelStartError(f"the grading kernel exited at start-up (exit status {self.proc.returncode})")
            raise KernelStartError(f"the grading kernel did not answer within {startup_timeout:.0f} s of starting")
        self.reaper = _child_of(self.proc.pid) if self.policy.enabled else None

    def _watch(self, names: tuple[str, ...]) -> None:
        """Watch channels for a dropped connection: zmq's answer to a message over MAX_MESSAGE_BYTES."""
        import zmq

        for name in names:
            self.monitors[name] = self._channel(name).socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)

    def _channel(self, name: str):
        return getattr(self.client, f"{name}_channel")

    def _handshake(self, timeout: float) -> bool:
        """Until the kernel answers kernel_info on the shell channel *and* a status for such a request
        arrives on the output channel (which connects asynchronously); False if that takes ``timeout``."""
        deadline = time.monotonic() + timeout
        sent: set[str] = set()
        replied = seen = False
        next_request = 0.0
        while time.monotonic() < deadline and self.alive() and not (replied and seen):
            if time.monotonic() >= next_request:  # ask again: an early status may go out before we listen
                sent.add(self.client.kernel_info())
                next_request = time.monotonic() + 0.5
            replied = replied or _receive(self.client.get_shell_msg, sent, 0.05)[0] == "kernel_info_reply"
            seen = seen or _receive(self.client.get_iopub_msg, sent, 0.05)[0] == "status"
        return replied and seen

    def _reconnect(self, names: set[str], timeout: float) -> bool:
        """Replace channels whose connection zmq dropped (it does not reconnect after an oversized message)."""
        for name in names:
            monitor = self.monitors.pop(name)
            channel = self._channel(name)
            try:
                channel.socket.disable_monitor()
            except Exception:  # noqa: BLE001
                pass
            monitor.close(linger=0)
            channel.close()
            setattr(self.client, f"_{name}_channel", None)
        self._watch(tuple(names))
        return self._handshake(max(timeout, 5.0))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _exits_within(self, seconds: float) -> bool:
        try:
            self.proc.wait(timeout=seconds)
            return True
        except subprocess.TimeoutExpired:
            return False

    # ------------------------------------------------------------------------------------------- running

    def execute(self, code: str, timeout: float, output_limit: int = OUTPUT_LIMIT) -> CellRun:
        """Run ``code``; return when its reply (and its output) came, the kernel died, or ``timeout`` passed.

        A dropped connection (an oversized message) marks the cell as flooded; the lost channel is
        replaced before returning, or, if the kernel does not answer on it, the cell counts as timed out.
        """
        import zmq

        start = time.monotonic()
        deadline = start + max(0.0, timeout)
        out = _Output(output_limit)
        msg_id = self.client.execute(code, store_history=False, allow_stdin=False, stop_on_error=False)
        poller = zmq.Poller()
        monitors = {monitor: name for name, monitor in self.monitors.items()}
        for sock in [*(self._channel(name).socket for name in CHANNELS), *monitors]:
            poller.register(sock, zmq.POLLIN)
        reply, idle, error, replied_at, lost = None, False, "", None, set()
        status = "ok"
        while True:
            now = time.monotonic()
            if reply is not None and (idle or "iopub" in lost or now - replied_at > IOPUB_GRACE):
                break
            if "shell" in lost and ("iopub" in lost or idle):
                break  # the reply can never come; the output said (or cannot say) the cell ended
            if now >= deadline:
                status = "timeout"
                break
            events = dict(poller.poll(1000 * min(POLL_SECONDS, deadline - now)))
            for monitor, name in monitors.items():
                if monitor in events:
                    monitor.recv_multipart()
                    lost.add(name)
            if lost and not out.flooded:
                if self._exits_within(0.5):  # a dying kernel drops its connections too
                    return CellRun("died", out.text, "", False, time.monotonic() - start)
                out.flooded = True
            if self._channel("iopub").socket in events:
                kind, content = _receive(self.client.get_iopub_msg, msg_id)
                if kind == "stream":
                    out.add(content.get("text"))
                elif kind == "error" and not error:
                    error = _error_text(content)
                elif kind == "status" and content.get("execution_state") == "idle":
                    idle = True
            if self._channel("shell").socket in events:
                kind, content = _receive(self.client.get_shell_msg, msg_id)
                if kind == "execute_reply":
                    reply, replied_at = content, time.monotonic()
            if not events and not self.alive():
                return CellRun("died", out.text, "", out.flooded, time.monotonic() - start)
        if lost and not self._reconnect(lost, deadline - time.monotonic()):
            status = "timeout"  # the kernel does not answer on the new channels
        elif status == "ok" and (reply is None or reply.get("status") != "ok"):  # no reply: the shell was lost
            status, error = "error", error or _error_text(reply or {})
        return CellRun(status, out.text, error if status == "error" else "", out.flooded, time.monotonic() - start)

    # ------------------------------------------------------------------------------------------- closing

    def close(self) -> None:
        """Kill the kernel and, with it, every process in its sandbox; remove its connection folder."""
        if self.client is not None:
            try:
                for monitor in self.monitors.values():
                    monitor.close(linger=0)
                self.client.stop_channels()
                self.client.context.destroy(linger=0)
            except Exception:  # noqa: BLE001
                pass
            self.client = None
        if self.proc is not None:
            reaper = self.reaper or (_child_of(self.proc.pid) if self.policy.enabled and self.alive() else None)
            _kill(self.proc, group=not self.policy.enabled)
            if reaper is not None:
                _kill_and_wait(reaper)
            self.proc = None
        shutil.rmtree(self.runtime, ignore_errors=True)


def _receive(get, msg_ids: str | set[str], timeout: float = 0) -> tuple[str | None, dict]:
    """(msg_type, content) of the next message if it answers (one of) ``msg_ids``; others are skipped."""
    try:
        msg = get(timeout=timeout)
    except Empty:
        return None, {}
    except Exception:  # noqa: BLE001 (bad signature, bad JSON: the kernel is untrusted)
        return None, {}
    if not isinstance(msg, dict) or not isinstance(msg.get("content"), dict):
        return None, {}
    wanted = {msg_ids} if isinstance(msg_ids, str) else msg_ids
    if (msg.get("parent_header") or {}).get("msg_id") not in wanted:
        return None, {}
    return msg.get("msg_type"), msg["content"]


def _error_text(content: dict) -> str:
    name, value = content.get("ename", ""), content.get("evalue", "")
    name = name if isinstance(name, str) else "Error"
    value = value if isinstance(value, str) else ""
    return f"{name[:100]}: {value[:300]}" if value else name[:100]


def _child_of(pid: int) -> int | None:
    """The first child of ``pid`` (bwrap's PID 1 in the sandbox), found in /proc."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and fields[1] == str(pid):
            return int(entry.name)
    return None


def _kill(proc: subprocess.Popen, group: bool) -> None:
    try:
        if group:  # unsandboxed: the kernel leads its own process group
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    except OSError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _kill_and_wait(pid: int, timeout: float = 10) -> None:
    """SIGKILL ``pid`` (a PID namespace's init) and wait until it has exited: the kernel empties a PID
    namespace before its init's exit completes, so afterwards no process of that sandbox is left."""
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return
        if stat[stat.rfind(")") + 2:].split()[0] in ("Z", "X"):
            return
        time.sleep(0.02)
