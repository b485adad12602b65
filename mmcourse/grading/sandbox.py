"""The sandbox a student's kernel runs in: bubblewrap (``bwrap``), resource limits, and what stays out of reach.

A grading kernel runs the student's exercise cells, which are arbitrary code. With ``--sandbox auto``
(the default, when ``bwrap`` works) or ``required``, each kernel is started as ::

    bwrap <namespaces> <read-only binds> <private /tmp> <masks> <connection folder> --
        [setpriv --reuid=U ...]  prlimit <limits> --  VENV/bin/python -m ipykernel_launcher -f CONN

and therefore

* sees the system (``/usr``, ``/etc``), the Python environment and the course checkout **read-only**, and
  nothing else of the grader's file system: no home folder, no submissions, no reports, no other kernel;
* works in a private, size-limited ``/tmp`` (its working folder and home), gone when the kernel ends;
* has no network (its own network namespace), its own PID namespace (it sees only its own processes, and
  every process it starts, detached or not, is killed with it), its own IPC and UTS namespaces and session;
* runs under per-process limits: data memory, CPU seconds, file size, no core dumps, and a cap on
  processes counted for this sandbox alone: when the grader runs as root, the kernel gets an unused uid of
  its own (``setpriv``), since Linux does not count root's processes; otherwise bubblewrap's user namespace
  does the counting (Linux 5.14 and later);
* talks to the grader only over IPC sockets in its own connection folder, bound into the sandbox.

What it does not do: limit CPU *share* (a busy sandbox slows a concurrent one), hide the course's own
reference code (a student may call it), or stop a kernel from writing files into its connection folder
(each at most ``file_mb``; the folder is deleted afterwards). With ``--sandbox off`` student code runs as
the grader's user with all of its rights; the grader then only keeps its own bookkeeping safe.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

MODES = ("auto", "required", "off")
SYSTEM_DIRS = ("/usr", "/etc")  # bound read-only; /bin, /lib, ... are symlinks into /usr on merged-usr systems
MERGED_USR_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
KERNEL_HOME = "/tmp"  # the private scratch folder: working folder and home
UID_BASE, UID_SPAN = 0x70000000, 1 << 24  # where the kernel's own uid is drawn from when the grader is root


class SandboxError(RuntimeError):
    """The sandbox was required but cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class Limits:
    """Per-process resource limits inside the sandbox (``prlimit``), and the size of its ``/tmp``."""

    memory_mb: int = 4096  # RLIMIT_DATA: heap and anonymous memory (a torch kernel uses about 1 GB)
    processes: int = 256  # RLIMIT_NPROC: processes and threads (a kernel runs about 15 threads)
    cpu_seconds: int = 3600  # RLIMIT_CPU of each process, all its threads together (wall time is limited apart)
    file_mb: int = 64  # RLIMIT_FSIZE: largest file a process may write
    scratch_mb: int = 256  # the private /tmp (a tmpfs)

    def prlimit_args(self) -> list[str]:
        return [
            f"--data={self.memory_mb << 20}", f"--nproc={self.processes}", f"--cpu={self.cpu_seconds}",
            f"--fsize={self.file_mb << 20}", "--core=0",
        ]


@dataclass(frozen=True)
class Policy:
    """How grading kernels are started in one batch (picklable: worker processes receive it).

    ``enabled`` False means no sandbox: the kernel runs as the grader's user (``--sandbox off``, or
    ``auto`` without a working bubblewrap; ``note`` then says so).
    """

    enabled: bool
    python: str  # the kernel's interpreter: the environment's own bin/python (its symlink keeps site-packages)
    package_root: str  # the folder holding the grader's ``mmcourse``: the kernel imports the same code
    readonly: tuple[str, ...] = ()  # folders bound read-only at the same path
    masked: tuple[str, ...] = ()  # paths inside those folders the kernel must not see (submissions, reports)
    limits: Limits = field(default_factory=Limits)
    privileged: bool = False  # the grader runs as root: drop the kernel to a uid of its own
    bwrap: str = "bwrap"  # the tools, by absolute path once resolved (nothing on the kernel's PATH can stand in)
    prlimit: str = "prlimit"
    setpriv: str = "setpriv"
    note: str = ""  # one line for the TA: what protects this batch, or a warning

    @property
    def name(self) -> str:
        return "bubblewrap" if self.enabled else "off"

    def kernel_uid(self) -> int | None:
        """A fresh, unused uid for one kernel when the grader is root (else None: the user's own uid)."""
        return UID_BASE + secrets.randbelow(UID_SPAN) if self.enabled and self.privileged else None

    def command(self, runtime: Path, program: list[str], uid: int | None = None) -> list[str]:
        """The command line that runs ``program`` (argv) in the sandbox, with ``runtime`` bound read-write."""
        if not self.enabled:
            return list(program)
        return [self.bwrap, *self._namespaces(), *self._caps(), *self._filesystem(runtime), *self._environment(),
                "--chdir", KERNEL_HOME, "--", *self._identity(uid), self.prlimit, *self.limits.prlimit_args(), "--",
                *program]

    def kernel_command(self, runtime: Path, connection_file: Path, uid: int | None = None) -> list[str]:
        """The command line of a grading kernel whose connection file is ``connection_file``."""
        return self.command(runtime, [self.python, "-m", "ipykernel_launcher", "-f", str(connection_file)], uid)

    def kernel_env(self, scratch: Path) -> dict[str, str]:
        """Environment of an unsandboxed kernel (a sandboxed one gets a fresh environment from bwrap)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JPY_", "PYTHONSTARTUP"))}
        env.update(HOME=str(scratch), IPYTHONDIR=str(scratch / ".ipython"), MPLCONFIGDIR=str(scratch / ".matplotlib"),
                   PYTHONPATH=self.package_root, MPLBACKEND="Agg")
        return env

    # ---------------------------------------------------------------------------------- pieces of the command

    def _namespaces(self) -> list[str]:
        flags = ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
                 "--hostname", "grading", "--die-with-parent", "--new-session"]
        if not self.privileged:
            flags.append("--unshare-user")  # also where bwrap is setuid: processes are then counted per sandbox
        return flags

    def _filesystem(self, runtime: Path) -> list[str]:
        args: list[str] = []
        for path in SYSTEM_DIRS:
            if os.path.isdir(path):
                args += ["--ro-bind", path, path]
        for link in MERGED_USR_LINKS:
            if os.path.islink(link):
                args += ["--symlink", os.readlink(link), link]
            elif os.path.isdir(link):
                args += ["--ro-bind", link, link]
        args += ["--dev", "/dev", "--proc", "/proc"]
        args += ["--perms", "1777", "--size", str(self.limits.scratch_mb << 20), "--tmpfs", KERNEL_HOME]
        binds = [*self.readonly, str(runtime)]
        args += _parent_dirs(binds)  # bwrap would create missing parents as 0700: unreadable after the uid drop
        for path in self.readonly:
            args += ["--ro-bind", path, path]
        for path in self.masked:  # after the binds they hide something in
            args += ["--tmpfs", path] if os.path.isdir(path) else ["--ro-bind", "/dev/null", path]
        args += ["--bind", str(runtime), str(runtime)]
        return args

    def _environment(self) -> list[str]:
        env = {
            "HOME": KERNEL_HOME, "TMPDIR": KERNEL_HOME, "USER": "student", "LOGNAME": "student",
            "PATH": f"{Path(self.python).parent}:/usr/local/bin:/usr/bin:/bin", "PYTHONPATH": self.package_root,
            "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "Agg", "MPLCONFIGDIR": f"{KERNEL_HOME}/.matplotlib",
            "LANG": "C.UTF-8",
        }
        args = ["--clearenv"]  # nothing of the grader's environment (tokens, JPY_PARENT_PID) gets in
        for key, value in env.items():
            args += ["--setenv", key, value]
        return args

    def _identity(self, uid: int | None) -> list[str]:
        if uid is None:
            return []
        return [self.setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all", "--"]

    def _caps(self) -> list[str]:
        return ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"] if self.privileged else []


def _parent_dirs(paths: list[str]) -> list[str]:
    """``--dir`` (mode 0755) for every missing parent of the bound paths, shallowest first."""
    parents: set[str] = set()
    for path in paths:
        p = Path(path).parent
        while str(p) not in ("/", "."):
            parents.add(str(p))
            p = p.parent
    covered = [*SYSTEM_DIRS, KERNEL_HOME]
    args: list[str] = []
    for parent in sorted(parents, key=lambda s: (s.count("/"), s)):
        if parent in covered or any(parent.startswith(c + "/") for c in SYSTEM_DIRS):
            continue  # exists inside a bound system folder already
        args += ["--perms", "0755", "--dir", parent]
    return args


# ---------------------------------------------------------------------------------------------- choosing


def mode_from_env(default: str = "auto") -> str:
    """The sandbox mode: ``MMCOURSE_SANDBOX`` (CI sets ``required``) or ``default``."""
    mode = os.environ.get("MMCOURSE_SANDBOX", "").strip().lower() or default
    if mode not in MODES:
        raise ValueError(f"MMCOURSE_SANDBOX must be one of {', '.join(MODES)}, not {mode!r}")
    return mode


def resolve(mode: str | None = None, *, hide: list[str | Path] = (), limits: Limits | None = None,
            probe_first: bool = True) -> Policy:
    """The sandbox policy for one batch.

    ``mode``: ``auto`` (bubblewrap when it works, else no sandbox with a loud ``note``), ``required``
    (raise :class:`SandboxError` when bubblewrap is missing or not in effect) or ``off``; None reads
    ``MMCOURSE_SANDBOX``. ``hide``: paths the kernel must not see (submissions, reports).
    """
    mode = mode_from_env() if mode is None else mode
    if mode not in MODES:
        raise ValueError(f"sandbox mode must be one of {', '.join(MODES)}, not {mode!r}")
    base = _base_policy(limits or Limits())
    if mode == "off":
        return replace(base, note="sandbox off (--sandbox off): student code runs as you, with your files and network")
    tools = {name: shutil.which(name) for name in ("bwrap", "prlimit", *(["setpriv"] if base.privileged else []))}
    missing = [name for name, path in tools.items() if path is None]
    problem = f"{' and '.join(missing)} not found (install bubblewrap and util-linux)" if missing else None
    found = {name: path for name, path in tools.items() if path}
    policy = replace(base, enabled=True, masked=_masks(base.readonly, hide), **found)
    if problem is None and probe_first:
        problem = probe(policy)
    if problem is None:
        return replace(policy, note=f"sandbox: bubblewrap ({_describe(policy)})")
    if mode == "required":
        raise SandboxError(f"--sandbox required, but the sandbox cannot be used: {problem}")
    return replace(base, note=f"WARNING: NO SANDBOX: {problem}. Student code runs as you, with access to your files "
                              "and the network. Install bubblewrap (Debian/Ubuntu: apt install bubblewrap) or grade "
                              "in a container; --sandbox off silences this warning.")


def _base_policy(limits: Limits) -> Policy:
    import mmcourse

    package_root = str(Path(mmcourse.__file__).resolve().parent.parent)
    prefix = Path(sys.prefix)
    python = prefix / "bin" / "python"
    if not python.exists():
        python = Path(sys.executable)
    roots = [str(prefix), os.path.realpath(sys.base_prefix), os.path.realpath(sys.exec_prefix),
             os.path.realpath(sys.base_exec_prefix), package_root, os.path.realpath(Path(python).resolve().parent.parent)]
    return Policy(enabled=False, python=str(python), package_root=package_root, readonly=_outermost(roots),
                  limits=limits, privileged=os.geteuid() == 0)


def _outermost(paths: list[str]) -> tuple[str, ...]:
    """Distinct existing folders, none inside another or inside a bound system folder."""
    keep: list[str] = []
    for p in sorted({os.path.normpath(p) for p in paths if os.path.isdir(p)}, key=len):
        if any(_inside(p, q) for q in [*keep, *SYSTEM_DIRS]):
            continue
        keep.append(p)
    return tuple(keep)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _masks(readonly: tuple[str, ...], hide: list[str | Path]) -> tuple[str, ...]:
    """What of ``hide`` lies inside a read-only bind, as paths to cover; a folder that holds a bound folder
    (say, submissions kept in the course's parent) cannot be covered whole, so its files are covered instead."""
    roots = [*readonly, *SYSTEM_DIRS]
    masks: list[str] = []
    for item in hide:
        path = os.path.realpath(item)
        if not os.path.exists(path):
            continue
        if any(_inside(root, path) for root in roots):  # hiding it would hide the course or the environment
            if os.path.isdir(path):
                masks += [m for m in _masks(readonly, _notebooks_in(path)) if not any(_inside(r, m) for r in roots)]
            continue
        if any(_inside(path, root) for root in roots):
            masks.append(path)
    return tuple(dict.fromkeys(masks))


def _notebooks_in(folder: str) -> list[str]:
    found = []
    for parent, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d not in (".git", ".venv", "node_modules")]
        found += [os.path.join(parent, f) for f in files if f.endswith(".ipynb")]
    return found


def _describe(policy: Policy) -> str:
    who = "its own uid" if policy.privileged else "a user namespace"
    lim = policy.limits
    return (f"read-only course and environment, private /tmp, no network, own PID namespace, {who}; per process: "
            f"{lim.memory_mb} MB memory, {lim.processes} processes, {lim.cpu_seconds} s CPU, {lim.file_mb} MB files")


# ---------------------------------------------------------------------------------------------- proving it

_PROBE = r"""
import os, socket, sys
problems = []
target = os.path.join(sys.argv[1], ".mmcourse-sandbox-probe")
try:
    open(target, "w").close()
    os.remove(target)
    problems.append("the course folder is writable")
except OSError:
    pass
if os.getpid() > 10:
    problems.append("no PID namespace (pid %d)" % os.getpid())
try:
    socket.create_connection(("1.1.1.1", 53), timeout=2).close()
    problems.append("the network is reachable")
except OSError:
    pass
import mmcourse
print("PROBLEMS:" + "; ".join(problems) if problems else "SANDBOX-OK " + mmcourse.__file__)
"""


def probe(policy: Policy, timeout: float = 60) -> str | None:
    """Run a tiny program in the sandbox and check that it is really in effect; None if it is, else why not.

    A mis-set command line would run the kernel unsandboxed without any error, hence this check.
    """
    runtime = Path(tempfile.mkdtemp(prefix="mmcourse-probe-"))
    try:
        uid = policy.kernel_uid()
        if uid is not None:
            os.chown(runtime, uid, uid)
        argv = policy.command(runtime, [policy.python, "-c", _PROBE, policy.package_root], uid)
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                                  cwd=runtime, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        except (OSError, subprocess.TimeoutExpired) as err:
            return f"bubblewrap could not run ({type(err).__name__}: {err})"
        out = proc.stdout.strip().splitlines()
        if proc.returncode == 0 and out and out[-1].startswith("SANDBOX-OK"):
            return None
        if out and out[-1].startswith("PROBLEMS:"):
            return "the sandbox is not in effect: " + out[-1][len("PROBLEMS:"):]
        detail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
        return f"bubblewrap failed (exit {proc.returncode}: {detail})"
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
