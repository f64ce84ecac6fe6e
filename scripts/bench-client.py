"""Measurement helpers of scripts/bench-run.sh and scripts/bench-serve.sh. Python standard
library only."""
import json, os, re, signal, socket, statistics, subprocess, sys, threading, time

PAYLOAD = json.dumps({"data": "x" * 1013}, separators=(",", ":")).encode()
assert len(PAYLOAD) == 1024
INVOKE = "/2015-03-31/functions/{}/invocations"
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


class Conn:
    """One keep-alive HTTP/1.1 connection; requests are pre-built bytes."""

    def __init__(self, port, timeout=600):
        self.port = port
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def build(self, method, path, body=b"", close=False):
        h = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
        if method == "POST":
            h += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        if close:
            h += "Connection: close\r\n"
        return h.encode() + b"\r\n" + body

    def _more(self, data):
        c = self.s.recv(65536)
        if not c:
            raise EOFError("connection closed by the server")
        return data + c

    def roundtrip(self, raw):
        self.s.sendall(raw)
        data = self.buf
        while (i := data.find(b"\r\n\r\n")) < 0:
            data = self._more(data)
        lines = data[:i].split(b"\r\n")
        rest = data[i + 4:]
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            headers[k.strip().lower().decode()] = v.strip().decode()
        if "content-length" in headers:
            n = int(headers["content-length"])
            while len(rest) < n:
                rest = self._more(rest)
            body, self.buf = rest[:n], rest[n:]
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                while b"\r\n" not in rest:
                    rest = self._more(rest)
                size_line, rest = rest.split(b"\r\n", 1)
                size = int(size_line.split(b";")[0], 16)
                while len(rest) < size + 2:
                    rest = self._more(rest)
                body += rest[:size]
                rest = rest[size + 2:]
                if size == 0:
                    break
            self.buf = rest
        else:
            try:
                while True:
                    rest = self._more(rest)
            except EOFError:
                pass
            body, self.buf = rest, b""
        return status, headers, body

    def close(self):
        self.s.close()


def one_shot(port, path, body):
    c = Conn(port)
    try:
        return c.roundtrip(c.build("POST", path, body, close=True))
    finally:
        c.close()


def echo_ok(status, body):
    if status != 200:
        return False
    return body == PAYLOAD or json.loads(body) == json.loads(PAYLOAD)


def wait_port(port, secs=120):
    end = time.time() + secs
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"port {port} never accepted a connection")


def cpu_tree(specs):
    """{name: {pid: [cmd, on-CPU ns summed over its threads]}} for NAME=PID trees (root included)."""
    res = {}
    for spec in specs or []:
        name, pid = spec.split("=")
        pid = int(pid)
        procs = {}
        for p, *_ in [(pid, 0)] + tree(pid):
            try:
                cmd = open(f"/proc/{p}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace").strip()
                ns = 0
                for t in os.listdir(f"/proc/{p}/task"):
                    ns += int(open(f"/proc/{p}/task/{t}/schedstat").read().split()[0])
            except (OSError, ValueError):
                continue
            procs[str(p)] = [cmd, ns]
        res[name] = procs
    return res


def cmd_cpusnap(a):
    json.dump(cpu_tree(a.pids), open(a.out, "w"))


def cmd_lat(a):
    """Warm latency, alternating between servers: NAME=PORT:FUNCTION ..."""
    targets = []
    for spec in a.targets:
        name, rest = spec.split("=", 1)
        port, fn = rest.split(":", 1)
        targets.append((name, int(port), fn))
    conns, reqs, floors = {}, {}, {}
    for name, port, fn in targets:
        c = Conn(port)
        conns[name] = c
        reqs[name] = c.build("POST", INVOKE.format(fn), PAYLOAD)
        floors[name] = c.build("GET", "/lambox-bench-floor")
        for i in range(a.warmup):  # the first one may start (or even build) the function
            st, _, body = c.roundtrip(reqs[name])
            if not echo_ok(st, body):
                raise SystemExit(f"{name}: warm-up invoke {i} answered {st}: {body[:200]!r}")
    lat = {n: [] for n, _, _ in targets}
    per_round = {n: [] for n, _, _ in targets}
    per = a.n // a.rounds
    bad = {n: 0 for n, _, _ in targets}
    cpu_before = cpu_tree(a.cpu)
    for r in range(a.rounds):
        order = targets[r % len(targets):] + targets[:r % len(targets)]
        for name, _, _ in order:
            c, raw, xs = conns[name], reqs[name], []
            for _ in range(per):
                t0 = time.perf_counter_ns()
                st, _, body = c.roundtrip(raw)
                t1 = time.perf_counter_ns()
                xs.append((t1 - t0) / 1000)
                if not echo_ok(st, body):
                    bad[name] += 1
            lat[name] += xs
            per_round[name].append(statistics.median(xs))
    cpu_after = cpu_tree(a.cpu)
    floor = {n: [] for n, _, _ in targets}
    floor_status = {}
    fper = a.floor_n // a.rounds
    for name, _, _ in targets:
        for _ in range(max(20, fper // 4)):
            floor_status[name] = conns[name].roundtrip(floors[name])[0]
    for r in range(a.rounds):
        order = targets[r % len(targets):] + targets[:r % len(targets)]
        for name, _, _ in order:
            c, raw = conns[name], floors[name]
            for _ in range(fper):
                t0 = time.perf_counter_ns()
                c.roundtrip(raw)
                floor[name].append((time.perf_counter_ns() - t0) / 1000)
    json.dump({"lat_us": lat, "round_p50_us": per_round, "bad": bad,
               "floor_us": floor, "floor_status": floor_status,
               "order": [n for n, _, _ in targets], "cpu": [cpu_before, cpu_after]}, open(a.out, "w"))


def cmd_one(a):
    """One invoke on a fresh connection: prints client ms and the request id."""
    t0 = time.perf_counter_ns()
    st, h, body = one_shot(a.port, INVOKE.format(a.function), a.body.encode())
    ms = (time.perf_counter_ns() - t0) / 1e6
    print(json.dumps({"status": st, "client_ms": ms, "request_id": h.get("x-amzn-requestid"),
                      "body": body[:200].decode(errors="replace")}))


class NextListener:
    """A Runtime API that records when GET /next arrives, then hangs up (the runtime exits)."""

    def __init__(self):
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        self.arrivals = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            c, _ = self.ls.accept()
            c.settimeout(5)
            d = b""
            try:
                while b"\r\n" not in d:
                    x = c.recv(4096)
                    if not x:
                        break
                    d += x
            except OSError:
                pass
            t = time.perf_counter_ns()
            if d.startswith(b"GET /2018-06-01/runtime/invocation/next"):
                self.arrivals.append(t)
            c.close()


def lambda_env(port):
    return {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LAMBDA_TASK_ROOT": "/var/task", "LAMBDA_RUNTIME_DIR": "/var/runtime",
            "AWS_LAMBDA_FUNCTION_NAME": "function", "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128", "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/function",
            "AWS_LAMBDA_LOG_STREAM_NAME": "bench", "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{port}"}


def cmd_cold(a):
    """Cold starts, alternating: lambox (exit → next invoke), host exec, runc, crun, podman."""
    nl = NextListener()
    env = lambda_env(nl.port)
    bundle = a.bundle
    cfg = json.load(open(os.path.join(bundle, "config.tmpl.json")))
    cfg["process"]["env"] = [f"{k}={v}" for k, v in env.items()]
    json.dump(cfg, open(os.path.join(bundle, "config.json"), "w"))
    penv = []
    for k, v in env.items():
        penv += ["-e", f"{k}={v}"]
    runc_ids = open(a.runc_ids, "a")

    def timed(cmd, cid=None, env_=None):
        if cid:
            runc_ids.write(cid + "\n")
            runc_ids.flush()
        nl.arrivals.clear()
        t0 = time.perf_counter_ns()
        p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env_)
        t1 = time.perf_counter_ns()
        nxt = (nl.arrivals[0] - t0) / 1e6 if nl.arrivals else None
        return {"next_ms": nxt, "exit_ms": (t1 - t0) / 1e6, "rc": p.returncode,
                "err": p.stderr.decode(errors="replace").strip().splitlines()[-1:] }

    res = {"lambox": [], "host": [], "runc": [], "podman-host": [], "podman-none": []}
    methods = ["lambox", "host", "runc", "podman-host", "podman-none"]
    # crun: one try; this machine's hybrid cgroup layout makes it refuse.
    try:
        res["crun-probe"] = timed(["crun", "run", "-b", bundle, f"lambox-bench-{os.getpid()}-crun"],
                                  f"lambox-bench-{os.getpid()}-crun")
    except OSError as e:
        res["crun-probe"] = {"rc": None, "err": [str(e)]}
    inv = INVOKE.format("function")
    for i in range(a.n):
        for m in methods[i % len(methods):] + methods[:i % len(methods)]:
            if m.startswith("podman") and i % max(1, a.n // a.podman_n) != 0:
                continue
            if m == "lambox":
                st, _, body = one_shot(a.lambox_port, inv, b'{"exit":1}')
                time.sleep(a.gap)  # the old environment's teardown, the netns pool refill
                t0 = time.perf_counter_ns()
                st, h, body = one_shot(a.lambox_port, inv, b'{"cold":%d}' % i)
                res["lambox"].append({"client_ms": (time.perf_counter_ns() - t0) / 1e6,
                                      "status": st, "request_id": h.get("x-amzn-requestid")})
            elif m == "host":
                res["host"].append(timed([os.path.join(bundle, "rootfs/var/task/bootstrap")], env_=env))
            elif m == "runc":
                cid = f"lambox-bench-{os.getpid()}-{i}"
                res["runc"].append(timed(["runc", "run", "-b", bundle, cid], cid))
            elif m == "podman-host":
                res["podman-host"].append(timed(["podman", "run", "--rm", "--runtime", "runc",
                                                 "--network", "host"] + penv + [a.podman_image]))
            elif m == "podman-none":
                res["podman-none"].append(timed(["podman", "run", "--rm", "--runtime", "runc",
                                                 "--network", "none"] + penv + [a.podman_image]))
            time.sleep(0.05)
    time.sleep(1.0)
    text = open(a.lambox_log, errors="replace").read()
    for s in res["lambox"]:
        m = re.search(r"REPORT RequestId: " + re.escape(s["request_id"] or "?") +
                      r"[^\n]*Init Duration: ([0-9.]+) ms", text)
        s["init_ms"] = float(m.group(1)) if m else None
    json.dump(res, open(a.out, "w"))


def cmd_coldseq(a):
    """n cold starts of a running lambox --concurrency 1 ({"exit":1}, gap, invoke): for tracing."""
    inv = INVOKE.format("function")
    ids = []
    for i in range(a.n):
        one_shot(a.port, inv, b'{"exit":1}')
        time.sleep(a.gap)
        st, h, _ = one_shot(a.port, inv, b'{"traced":%d}' % i)
        ids.append(h.get("x-amzn-requestid"))
        time.sleep(a.gap)
    json.dump(ids, open(a.out, "w"))


def proc_status(pid):
    out = {}
    try:
        for line in open(f"/proc/{pid}/status"):
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "Threads", "PPid"):
                out[k] = int(v.split()[0])
        for line in open(f"/proc/{pid}/smaps_rollup"):
            k, _, v = line.partition(":")
            if k in ("Pss", "Private_Clean", "Private_Dirty", "Shared_Clean", "Shared_Dirty"):
                out[k] = int(v.split()[0])
        out["cmd"] = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        pass
    return out


def tree(root):
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [(root, 0)]
    while todo:
        p, depth = todo.pop()
        for k in kids.get(p, []):
            out.append((k, depth + 1, bool(kids.get(k))))
            todo.append((k, depth + 1))
    return out


def snapshot(root):
    procs = []
    for pid, depth, has_kids in tree(root):
        s = proc_status(pid)
        if not s:
            continue
        s["pid"], s["depth"] = pid, depth
        if "__lambox-sandbox-init" in s.get("cmd", ""):
            # A helper without children is a pre-spawned one waiting for a spec (not an
            # environment's).
            s["role"] = ("helper" if has_kids else "pooled") if depth == 1 else "pid1"
        else:
            s["role"] = "function"
        procs.append(s)
    return {"self": proc_status(root), "procs": procs}


def cmd_mem(a):
    """lambox RSS with 0, 1 and N idle environments."""
    inv = INVOKE.format("function")
    time.sleep(1.0)
    snaps = {"0": snapshot(a.pid)}
    st, _, body = one_shot(a.port, inv, PAYLOAD)
    assert st == 200, body
    time.sleep(1.0)
    snaps["1"] = snapshot(a.pid)
    errs = []

    def go(i):
        try:
            st, _, body = one_shot(a.port, inv, b'{"sleep_ms":1500,"i":%d}' % i)
            if st != 200:
                errs.append((st, body[:200]))
        except Exception as e:  # noqa: BLE001
            errs.append(repr(e))
    ts = [threading.Thread(target=go, args=(i,)) for i in range(a.envs)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    time.sleep(1.5)
    snaps[str(a.envs)] = snapshot(a.pid)
    snaps["errors"] = errs
    json.dump(snaps, open(a.out, "w"))


def cmd_procmem(a):
    """RSS/PSS of processes and their descendants: NAME=PID ..."""
    res = {}
    for spec in a.pids:
        name, pid = spec.split("=")
        res[name] = snapshot(int(pid))
    json.dump(res, open(a.out, "w"))


def cmd_cgstat(a):
    """cpu.stat (CFS throttling) of the environments of lambox processes NAME=PID ..."""
    res = {}
    import glob
    for spec in a.pids:
        name, pid = spec.split("=")
        envs = []
        for d in glob.glob(f"/sys/fs/cgroup/cpu/**/lambox/{pid}-*", recursive=True):
            st = {}
            try:
                for line in open(os.path.join(d, "cpu.stat")):
                    k, v = line.split()
                    st[k] = int(v)
                st["quota_us"] = int(open(os.path.join(d, "cpu.cfs_quota_us")).read())
                st["period_us"] = int(open(os.path.join(d, "cpu.cfs_period_us")).read())
            except OSError:
                continue
            envs.append(st)
        res[name] = envs
    json.dump(res, open(a.out, "w"))


def cmd_cgmig(a):
    """Cost of the first write of a pid into a fresh cgroup's cgroup.procs, per hierarchy,
    after an idle gap (what an environment's helper pays when it joins its cgroups)."""
    own = ""
    for line in open("/proc/self/cgroup"):
        _, ctrl, path = line.strip().split(":", 2)
        if ctrl == "memory":
            own = path
    hier = [("memory (v1)", "/sys/fs/cgroup/memory" + own), ("pids (v1)", "/sys/fs/cgroup/pids"),
            ("cpu (v1)", "/sys/fs/cgroup/cpu"), ("unified (v2)", "/sys/fs/cgroup/unified")]
    hier = [(n, b) for n, b in hier if os.path.isdir(b)]
    res = {"first": {n: [] for n, _ in hier}, "order": [n for n, _ in hier]}
    made = []
    try:
        for i in range(a.n):
            p = subprocess.Popen(["sleep", "30"])
            rot = hier[i % len(hier):] + hier[:i % len(hier)]
            for j, (n, base) in enumerate(rot):
                d = f"{base}/lambox-bench-cgmig-{os.getpid()}-{i}"
                os.mkdir(d)
                made.append(d)
                t = time.perf_counter_ns()
                with open(d + "/cgroup.procs", "w") as f:
                    f.write(str(p.pid))
                ms = (time.perf_counter_ns() - t) / 1e6
                res["first"][n].append({"ms": ms, "position": j})
            p.kill()
            p.wait()
            time.sleep(a.gap)
    finally:
        for d in reversed(made):
            for _ in range(100):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)
    json.dump(res, open(a.out, "w"))


def cmd_freeze(a):
    """Freeze + thaw of a cgroup v2 group holding an idle 4-thread process, as lambox does
    around every warm invoke (write cgroup.freeze, poll cgroup.events)."""
    d = f"/sys/fs/cgroup/unified/lambox-bench-freeze-{os.getpid()}"
    os.mkdir(d)
    p = subprocess.Popen([sys.executable, "-c", "import threading,time\n"
                          "for i in range(3): threading.Thread(target=time.sleep, args=(120,)).start()\n"
                          "time.sleep(120)"])
    fr, th = [], []
    try:
        time.sleep(0.3)
        with open(d + "/cgroup.procs", "w") as f:
            f.write(str(p.pid))
        fz = os.open(d + "/cgroup.freeze", os.O_WRONLY)
        ev = os.open(d + "/cgroup.events", os.O_RDONLY)
        for _ in range(a.n):
            t0 = time.perf_counter_ns()
            os.pwrite(fz, b"1", 0)
            while b"frozen 1" not in os.pread(ev, 64, 0):
                pass
            t1 = time.perf_counter_ns()
            os.pwrite(fz, b"0", 0)
            while b"frozen 0" not in os.pread(ev, 64, 0):
                pass
            t2 = time.perf_counter_ns()
            fr.append((t1 - t0) / 1000)
            th.append((t2 - t1) / 1000)
        os.close(fz)
        os.close(ev)
    finally:
        p.kill()
        p.wait()
        for _ in range(100):
            try:
                os.rmdir(d)
                break
            except OSError:
                time.sleep(0.01)
    json.dump({"freeze_us": fr, "thaw_us": th}, open(a.out, "w"))


def main():
    import argparse
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("lat"); p.add_argument("--n", type=int); p.add_argument("--warmup", type=int)
    p.add_argument("--rounds", type=int); p.add_argument("--floor-n", type=int); p.add_argument("--out")
    p.add_argument("--cpu", action="append", help="NAME=PID: on-CPU time of this tree around the timed rounds")
    p.add_argument("targets", nargs="+")
    p = sub.add_parser("one"); p.add_argument("--port", type=int); p.add_argument("--function", default="function")
    p.add_argument("--body", default='{"first":1}')
    p = sub.add_parser("wait"); p.add_argument("--port", type=int); p.add_argument("--secs", type=int, default=120)
    p = sub.add_parser("cold"); p.add_argument("--n", type=int); p.add_argument("--podman-n", type=int)
    p.add_argument("--lambox-port", type=int); p.add_argument("--lambox-log"); p.add_argument("--gap", type=float)
    p.add_argument("--bundle"); p.add_argument("--podman-image"); p.add_argument("--runc-ids"); p.add_argument("--out")
    p = sub.add_parser("mem"); p.add_argument("--pid", type=int); p.add_argument("--port", type=int)
    p.add_argument("--envs", type=int); p.add_argument("--out")
    p = sub.add_parser("procmem"); p.add_argument("--out"); p.add_argument("pids", nargs="+")
    p = sub.add_parser("cgstat"); p.add_argument("--out"); p.add_argument("pids", nargs="+")
    p = sub.add_parser("cgmig"); p.add_argument("--n", type=int); p.add_argument("--gap", type=float)
    p.add_argument("--out")
    p = sub.add_parser("freeze"); p.add_argument("--n", type=int); p.add_argument("--out")
    p = sub.add_parser("cpusnap"); p.add_argument("--out"); p.add_argument("pids", nargs="+")
    p = sub.add_parser("coldseq"); p.add_argument("--port", type=int); p.add_argument("--n", type=int)
    p.add_argument("--gap", type=float); p.add_argument("--out")
    a = ap.parse_args()
    if a.cmd == "wait":
        return wait_port(a.port, a.secs)
    {"lat": cmd_lat, "one": cmd_one, "cold": cmd_cold, "mem": cmd_mem, "procmem": cmd_procmem,
     "cgstat": cmd_cgstat, "cgmig": cmd_cgmig, "freeze": cmd_freeze, "cpusnap": cmd_cpusnap,
     "coldseq": cmd_coldseq}[a.cmd](a)


main()
