#!/usr/bin/env python3
"""telejob side by side with its peers, each ratio measured in the same run.

Called by benches/peers/run (which installs the peers and builds telejob's side); see
BENCHMARKS.md. `--tiny` runs every comparison on a tiny input (what CI checks); the default sizes
are the issue's: ~200 MB archives, 10k x 256 KiB files and a 1 GiB file, 100k scheduler jobs,
a server with 10k jobs.
"""

import argparse
import base64
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLK = os.sysconf("SC_CLK_TCK")
ROWS = []  # (section, case, telejob, peer, ratio, goal, verdict)


def row(section, case, ours, peer, ratio, goal, ok):
    ROWS.append((section, case, ours, peer, ratio, goal, "met" if ok else "NOT MET"))
    print(f"  {case}: telejob {ours} | peer {peer} | {ratio} (goal {goal}) {'ok' if ok else 'NOT MET'}",
          flush=True)


def timed(cmd, env=None, cwd=None):
    """Runs cmd; returns (wall seconds, CPU seconds of it and its children)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{err}")
    return wall, ru.ru_utime + ru.ru_stime


def proc_cpu(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what):
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited early")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} did not listen")


def wait_healthy(port, proc, what):
    """Waits until `proc` answers GET /healthz on `port`: telejob serve binds its port before
    it opens the database and writes admin.token, so an open port is not yet a server."""
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited early")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit(f"{what} did not answer /healthz")


# ---------------------------------------------------------------- inputs


def text_block(rng, n):
    """Compressible, not trivial: base64 of random bytes interleaved with repeated CSV rows."""
    raw = base64.b64encode(rng.randbytes(n // 2 + 3))[: n // 2]
    csv = (b"2014-03-08,slowsql,12345,0.25\n" * (n // 60 + 1))[: n - len(raw)]
    return raw + csv


def make_tree(root, files, size, seed):
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        d = root / f"d{i // 1000:03d}"
        d.mkdir(exist_ok=True)
        (d / f"f{i:06d}.csv").write_bytes(text_block(rng, size))


# ---------------------------------------------------------------- sections


# A run that starts soon after another run's cleanup waits until the freed inodes age out.
SETTLE_S = 400
SETTLE_STAMP = Path.home() / ".cache" / "telejob-peers" / "last-cleanup"

# Nothing the sections write is deleted before the whole run ends (about 20 GB and 1.3M files in
# the scratch directory). ext4 without a journal, as on this machine's disk, skips inodes freed in
# the last 60 s (up to 360 s while their inode table is not written back) when it allocates new
# ones (`recently_deleted` in `find_inode_bit`): creating 50k files after deleting 50k cost ~0.7 ms
# per file instead of ~0.03 ms, for whichever side ran next (perf: `recently_deleted` and
# `find_get_block_common` were the top kernel symbols).


def unpack(bins, work, tiny, reps):
    print("== unpack vs GNU tar", flush=True)
    sets = {
        "few large files": (2, 1 << 20) if tiny else (4, 50 << 20),
        "many small files": (200, 4096) if tiny else (50_000, 4096),
    }
    formats = [("gz", ["tar", "czf"], ["tar", "xzf"]),
               ("zst", ["tar", "--zstd", "-cf"], ["tar", "--zstd", "-xf"]),
               ("xz", ["tar", "cJf"], ["tar", "xJf"])]
    for name, (n, size) in sets.items():
        src = work / f"src-{n}"
        make_tree(src / "code", n, size, n)
        for ext, pack, extract in formats:
            archive = work / f"{n}.tar.{ext}"
            subprocess.run(pack + [str(archive), "-C", str(src), "code"], check=True)
            res = {"telejob": [], "tar": []}
            for r in range(reps + 1):  # the first round warms the page cache
                for who, cmd in (("tar", lambda d: extract + [str(archive), "-C", str(d)]),
                                 ("telejob", lambda d: [bins["tj-unpack"], str(archive), str(d)])):
                    dest = work / f"dest-{n}-{who}-{ext}-{r}"
                    dest.mkdir()
                    w, c = timed(cmd(dest))
                    if r:
                        res[who].append((w, c))
            tw = statistics.median(w for w, _ in res["telejob"])
            tc = statistics.median(c for _, c in res["telejob"])
            gw = statistics.median(w for w, _ in res["tar"])
            gc = statistics.median(c for _, c in res["tar"])
            row("unpack", f"{name}, tar.{ext}: wall", f"{tw:.3f} s", f"{gw:.3f} s",
                f"{tw / gw:.2f}x", "<= 0.9x", tw / gw <= 0.9)
            row("unpack", f"{name}, tar.{ext}: CPU", f"{tc:.3f} s", f"{gc:.3f} s",
                f"{tc / gc:.2f}x", "<= 1.0x", tc / gc <= 1.0)
            archive.unlink()


def publish(bins, peers, work, tiny):
    print("== publish vs aws s3 sync and rclone (s3s-fs server)", flush=True)
    port = free_port()
    root = work / "s3root"
    (root / "bench").mkdir(parents=True)
    srv = subprocess.Popen([peers["s3s-fs"], "--host", "127.0.0.1", "--port", str(port),
                            "--access-key", "AKIDBENCH", "--secret-key", "benchsecret", str(root)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, srv, "s3s-fs")
        endpoint = f"http://127.0.0.1:{port}"
        env = dict(os.environ, AWS_ACCESS_KEY_ID="AKIDBENCH", AWS_SECRET_ACCESS_KEY="benchsecret",
                   AWS_REGION="us-east-1", AWS_DEFAULT_REGION="us-east-1",
                   AWS_EC2_METADATA_DISABLED="true")
        rclone_env = {k: v for k, v in env.items() if k != "AWS_CA_BUNDLE"}
        rclone_env.update(RCLONE_CONFIG_B_TYPE="s3", RCLONE_CONFIG_B_PROVIDER="Other",
                          RCLONE_CONFIG_B_ENDPOINT=endpoint, RCLONE_CONFIG_B_ACCESS_KEY_ID="AKIDBENCH",
                          RCLONE_CONFIG_B_SECRET_ACCESS_KEY="benchsecret",
                          RCLONE_CONFIG_B_REGION="us-east-1")
        tools = {
            "telejob": lambda d, p: ([bins["tj-publish"], str(d), f"s3://bench/{p}/",
                                      "--endpoint", endpoint], env),
            "aws s3 sync": lambda d, p: ([peers["aws"], "--endpoint-url", endpoint, "s3", "sync",
                                          str(d), f"s3://bench/{p}/", "--only-show-errors"], env),
            "rclone": lambda d, p: (["rclone", "copy", str(d), f"b:bench/{p}"], rclone_env),
            "rclone --transfers 64": lambda d, p: (["rclone", "copy", "--transfers", "64", str(d),
                                                    f"b:bench/{p}"], rclone_env),
        }
        sets = {
            "small files": (50, 256 << 10) if tiny else (10_000, 256 << 10),
            "one large file": (1, 8 << 20) if tiny else (1, 1 << 30),
        }
        for name, (n, size) in sets.items():
            src = work / f"pub-{n}"
            if n == 1:
                src.mkdir()
                with open(src / "big.bin", "wb") as f:
                    rng = random.Random(7)
                    for _ in range(size // (8 << 20)):
                        f.write(text_block(rng, 8 << 20))
            else:
                make_tree(src, n, size, 11)
            res = {}
            for i, (tool, mk) in enumerate(tools.items()):
                cmd, e = mk(src, f"{n}-{i}")
                before = proc_cpu(srv.pid)
                wall, cpu = timed(cmd, env=e)
                server = proc_cpu(srv.pid) - before
                res[tool] = (wall, cpu, server)
                stored = sum(1 for _ in (root / "bench" / f"{n}-{i}").rglob("*") if _.is_file())
                if stored < n:
                    sys.exit(f"{tool} stored {stored} of {n} objects")
                print(f"  {name} / {tool}: {wall:.2f} s wall, {cpu:.2f} s CPU, server {server:.2f} s CPU",
                      flush=True)
            tw, tc, ts = res["telejob"]
            desc = lambda r: f"{r[0]:.2f} s ({n / r[0]:.0f} obj/s, {n * size / r[0] / 1e6:.0f} MB/s; CPU {r[1]:.2f} + server {r[2]:.2f} s)"
            for peer, goal in ((["aws s3 sync", 4.0] if n > 1 else ["aws s3 sync", 1.0]),
                               ("rclone", 1.0), ("rclone --transfers 64", 1.0)):
                if n > 1 and peer == "rclone":
                    continue  # the goal names the tuned rclone for small files; default is in the log
                pw = res[peer][0]
                row("publish", f"{name} vs {peer}", desc(res["telejob"]), desc(res[peer]),
                    f"{pw / tw:.2f}x as fast", f">= {goal:g}x", pw / tw >= goal)
    finally:
        srv.terminate()
        srv.wait()


def scheduler(bins, tiny):
    print("== scheduler fire lateness vs a sleep baseline", flush=True)
    try:
        out = subprocess.run(bins["scheduler-bench"], check=True, capture_output=True, text=True,
                             timeout=900).stdout
    except subprocess.TimeoutExpired:
        row("scheduler", "bench", "did not finish in 15 min", "-", "-", "-", False)
        return
    base = json.loads(subprocess.run([bins["tj-sleep-baseline"], "50" if tiny else "500", "10"],
                                     check=True, capture_output=True, text=True).stdout)
    b50 = base["tokio"]["p50"]
    print(f"  baseline: thread {base['thread']}, tokio {base['tokio']}", flush=True)
    pat = r"^\s*(\d+)\s+(\w+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+[\d.]+ms$"
    for m in re.finditer(pat, out, re.M):
        jobs, shape, burst = int(m[1]), m[2], int(m[3])
        p50, p99, mx = float(m[5]), float(m[6]), float(m[7])
        what = f"{jobs} {shape} jobs ({burst} at once)"
        row("scheduler", f"{what}: p50", f"{p50:.2f} ms", f"{b50:.2f} ms (tokio sleep)",
            f"{p50 / b50:.2f}x", "<= 2x", p50 <= 2 * b50)
        row("scheduler", f"{what}: p99 / max", f"{p99:.2f} / {mx:.2f} ms",
            f"{base['tokio']['p99']:.2f} / {base['tokio']['max']:.2f} ms", "-", "p99 <= 5 ms",
            p99 <= 5.0)


def run_overhead(bins, work, tiny):
    print("== local run overhead: trigger -> command start, 1 MB tarball", flush=True)
    code = work / "overhead"
    code.mkdir()
    (code / "blob.txt").write_bytes(text_block(random.Random(3), 1 << 20))
    tarball = work / "overhead.tar.gz"
    subprocess.run(["tar", "czf", str(tarball), "-C", str(code), "."], check=True)
    runs = "5" if tiny else "30"
    ours = json.loads(subprocess.run([bins["tj-run-overhead"], str(tarball), runs], check=True,
                                     capture_output=True, text=True).stdout)["overhead_ms"]
    shell = subprocess.run(["bash", "-c", f"""
for i in $(seq {runs}); do
  t0=$EPOCHREALTIME; d=$(mktemp -d); tar xzf {tarball} -C "$d"
  t1=$(cd "$d" && bash -c 'printf %s "$EPOCHREALTIME"'); rm -rf "$d"
  echo "$t0 $t1"
done"""], check=True, capture_output=True, text=True).stdout
    peer = [(float(b) - float(a)) * 1e3 for a, b in (l.split() for l in shell.splitlines())]
    o, p = statistics.median(ours), statistics.median(peer)
    row("run overhead", "trigger -> command start (median)", f"{o:.1f} ms",
        f"{p:.1f} ms (tar xzf + bash -c)", f"{o / p:.2f}x", "<= 20 ms", o <= 20)
    run_machine_overhead(bins, work, tarball, runs, o)


# The peer of a machine's set-up: the same steps by hand with util-linux's unshare (a user,
# mount, PID, IPC, UTS and network namespace), an overlay of the image, the code unpacked into
# the upper layer, optionally an ext4 disk on a loop device; then bash in the chroot.
MACHINE_PEER = r"""
img=$1; tgz=$2; disk=$3; runs=$4
for i in $(seq "$runs"); do
  t0=$EPOCHREALTIME; d=$(mktemp -d); mkdir "$d/lower" "$d/root" "$d/disk"
  if [ "$disk" != 0 ]; then
    truncate -s "$disk" "$d/disk.img"
    mkfs.ext4 -q -F -m 0 -O ^has_journal -E lazy_itable_init=1,nodiscard "$d/disk.img"
    mount -t ext4 -o loop,nodev,nosuid,noatime "$d/disk.img" "$d/disk"
  fi
  mkdir -p "$d/disk/upper/run/telejob/work/code" "$d/disk/ovwork"
  tar xzf "$tgz" -C "$d/disk/upper/run/telejob/work/code"
  mount -t overlay overlay -o "lowerdir=$img,upperdir=$d/disk/upper,workdir=$d/disk/ovwork" "$d/root"
  t1=$(unshare --user --map-root-user --mount --pid --ipc --uts --net --fork        chroot "$d/root" /bin/bash -c 'cd /run/telejob/work/code && printf %s "$EPOCHREALTIME"')
  umount "$d/root"; [ "$disk" != 0 ] && umount "$d/disk"; rm -rf "$d"
  echo "$t0 $t1"
done
"""


def run_machine_overhead(bins, work, tarball, runs, today):
    """Machines (root, TELEJOB_IMAGES_DIR with a built default image): telejob against
    today's restricted process and against unshare doing the same steps."""
    images = os.environ.get("TELEJOB_IMAGES_DIR")
    if os.geteuid() != 0 or not images or not (Path(images) / "default/.telejob-image").exists():
        print("   (machine overhead skipped: needs root and TELEJOB_IMAGES_DIR with a built image)")
        return
    image = str(Path(images) / "default")
    for label, extra, disk in [
        ("machine, network off", ["--network", "off"], 0),
        ("machine, network on (pasta)", ["--network", "on"], 0),
        ("machine, network off, 256 MiB ext4 disk", ["--network", "off", "--disk", str(256 << 20)], 256 << 20),
    ]:
        ours = json.loads(subprocess.run([bins["tj-run-overhead"], str(tarball), runs, "--images", images, *extra],
                                         check=True, capture_output=True, text=True).stdout)["overhead_ms"]
        shell = subprocess.run(["bash", "-c", MACHINE_PEER, "peer", image, str(tarball), str(disk), runs],
                               check=True, capture_output=True, text=True).stdout
        peer = [(float(b) - float(a)) * 1e3 for a, b in (l.split() for l in shell.splitlines())]
        o, p = statistics.median(ours), statistics.median(peer)
        goal = max(1.5 * today, 50.0)
        row("run overhead", f"{label} (median)", f"{o:.1f} ms",
            f"{p:.1f} ms (unshare + overlay{' + mkfs' if disk else ''})", f"{o / p:.2f}x",
            f"<= {goal:.0f} ms (1.5x today's or 50 ms)", o <= goal)


def server(bins, work, tiny):
    print("== server: idle RSS and GET /api/jobs/{name} under wrk", flush=True)
    data = work / "server"
    port = free_port()
    srv = subprocess.Popen([bins["telejob"], "serve", "--data-dir", str(data), "--listen",
                            f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env=dict(os.environ, TELEJOB_MAX_CONCURRENT="1"))
    try:
        wait_healthy(port, srv, "telejob serve")
        token = (data / "admin.token").read_text().strip()
        n = 200 if tiny else 10_000
        conn = http.client.HTTPConnection("127.0.0.1", port)
        hdr = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        for i in range(n):
            body = {"name": f"job-{i:05d}", "command": "./run.sh",
                    "schedule": {"frequency": "weekly", "day_of_week": days[i % 7],
                                 "time_of_day": f"{i % 24:02d}:{i % 60:02d}"}}
            conn.request("POST", "/api/jobs", json.dumps(body), hdr)
            r = conn.getresponse()
            reply = r.read()
            if r.status != 201:
                sys.exit(f"creating job {i}: HTTP {r.status}: {reply[:300]!r}")
        conn.close()
        time.sleep(3)
        rss = int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{srv.pid}/status").read_text())[1]) / 1024
        row("server", f"idle RSS with {n} jobs", f"{rss:.1f} MiB", "-", "-", "<= 30 MB", rss * 1.048576 <= 30)
        out = subprocess.run(["wrk", "-t2", "-c32", "-d2s" if tiny else "-d15s", "--latency", "-H",
                              f"Authorization: Bearer {token}",
                              f"http://127.0.0.1:{port}/api/jobs/job-{n // 2:05d}"],
                             check=True, capture_output=True, text=True).stdout
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])
        p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
        p99ms = float(p99[1]) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[p99[2]]
        row("server", "GET /api/jobs/{name}: throughput", f"{rps:.0f} req/s", "-", "-",
            ">= 20k req/s", rps >= 20_000)
        row("server", "GET /api/jobs/{name}: p99", f"{p99ms:.2f} ms", "-", "-", "<= 5 ms", p99ms <= 5)
    finally:
        srv.send_signal(signal.SIGTERM)
        srv.wait()


def fleet(bins, tiny):
    """tj-fleet: bursts of jobs through the real server on SQLite and PostgreSQL."""
    print("== fleet: a burst of jobs at one instant (and spread over the hour), row insert and "
          "command start lateness, API latency during the burst", flush=True)
    cases = [(200, False, 1)] if tiny else [(10_000, False, 2), (10_000, True, 2),
                                           (100_000, False, 1), (100_000, True, 2)]
    goals = {(10_000, "sqlite"): 250, (10_000, "postgres"): 500,
             (100_000, "sqlite"): 2000, (100_000, "postgres"): 2000}
    for jobs, spread, minutes in cases:
        cmd = [bins["tj-fleet"], bins["telejob"], str(jobs), str(minutes), "--coded",
               "5" if tiny else "20"] + (["--spread"] if spread else [])
        out = subprocess.run(cmd, check=True, capture_output=True, text=True)
        how = f"{jobs:,} jobs " + ("spread over the hour" if spread else "at one instant")
        for line in out.stdout.splitlines():
            m = json.loads(line)
            db = m.get("database", "")
            case = f"{how}, {db}"
            if m["bench"] == "fire_lateness":
                goal = goals.get((jobs, db), 250 if db == "sqlite" else 500)
                row("fleet", f"{case}: row insert p99 ({m['n']} slots)",
                    f"{m['p99_ms']:.0f} ms (p50 {m['p50_ms']:.0f}, max {m['max_ms']:.0f})",
                    "-", "-", f"<= {goal} ms", m["p99_ms"] <= goal)
                row("fleet", f"{case}: slots lost / doubled", f"{m['lost']} / {m['doubled']}",
                    "-", "-", "0 / 0", m["lost"] == 0 and m["doubled"] == 0)
            elif m["bench"] == "command_start":
                row("fleet", f"{case}: command start of {m['coded']} coded jobs, p99",
                    f"{m['p99_ms']:.0f} ms (p50 {m['p50_ms']:.0f})", "-", "-", "reported", True)
            elif m["bench"] == "api_during_burst":
                row("fleet", f"{case}: API p99 during the burst ({m['n']} requests)",
                    f"{m['p99_ms']:.1f} ms (max {m['max_ms']:.0f})", "-", "-", "<= 50 ms",
                    m["p99_ms"] <= 50)
            elif m["bench"] == "api_throughput" and db == "postgres" and not spread:
                row("fleet", f"GET /api/jobs/{{name}} on PostgreSQL with {jobs:,} jobs",
                    f"{m['requests_per_s']:.0f} req/s (p99 {m['p99_ms']:.1f} ms)", "-", "-",
                    "reported", True)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tiny", action="store_true", help="tiny inputs (CI smoke run)")
    ap.add_argument("--bins", required=True, help="directory with telejob and the tj-* commands")
    ap.add_argument("--scheduler-bench", required=True, help="the scheduler bench executable")
    ap.add_argument("--s3s-fs", required=True)
    ap.add_argument("--aws", required=True)
    ap.add_argument("--only", default="unpack,publish,scheduler,overhead,server,fleet")
    ap.add_argument("--work", default=None, help="scratch directory (default: a temp dir)")
    a = ap.parse_args()
    d = Path(a.bins)
    bins = {k: str(d / k) for k in ["telejob", "tj-unpack", "tj-publish", "tj-sleep-baseline",
                                    "tj-run-overhead", "tj-fleet"]}
    bins["scheduler-bench"] = [a.scheduler_bench] + ([] if a.tiny else ["--bench"])
    peers = {"s3s-fs": a.s3s_fs, "aws": a.aws}
    only = set(a.only.split(","))
    # A stopped run still removes its scratch directory (it holds ~20 GB at the end).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not a.tiny and SETTLE_STAMP.exists():
        wait = SETTLE_S - (time.time() - SETTLE_STAMP.stat().st_mtime)
        if wait > 0:
            print(f"waiting {wait:.0f} s: the last run's cleanup freed ~1.3M inodes, and ext4 "
                  "allocates around recently freed ones for up to 6 min", flush=True)
            time.sleep(wait)
    try:
        run_sections(a, bins, peers, only)
    finally:
        if not a.tiny and only & {"unpack", "publish"}:
            subprocess.run(["sync"], check=False)
            SETTLE_STAMP.parent.mkdir(parents=True, exist_ok=True)
            SETTLE_STAMP.touch()
    print()
    print("| area | case | telejob | peer | ratio | goal | |")
    print("|---|---|---|---|---|---|---|")
    for r in ROWS:
        print("| " + " | ".join(r) + " |")


def run_sections(a, bins, peers, only):
    with tempfile.TemporaryDirectory(dir=a.work) as w:
        work = Path(w)
        if "unpack" in only:
            unpack(bins, work, a.tiny, 1 if a.tiny else 3)
        if "publish" in only:
            publish(bins, peers, work, a.tiny)
        if "scheduler" in only:
            scheduler(bins, a.tiny)
        if "overhead" in only:
            run_overhead(bins, work, a.tiny)
        if "server" in only:
            server(bins, work, a.tiny)
        if "fleet" in only:
            fleet(bins, a.tiny)


if __name__ == "__main__":
    main()
