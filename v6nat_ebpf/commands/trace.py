"""`v6nat trace`: watch what the TC programs do to matching packets, live.

One line per packet per hook: the hook, the tuple as it arrived and as it
left, the verdict, the drop reason, the flow it belongs to. The filter is
applied in the kernel (bpf/lib/trace.h), rate-limited there, and put back as
it was when the command ends (N events, --timeout, Ctrl-C, SIGTERM or an
error); a tracer killed outright turns itself off when its lease runs out.
Works on the running daemon's pinned maps and programs (no compiler needed).

Must not import at module level: bcc.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import signal
import sys
import time
from typing import Any

from v6nat_ebpf.config import add_pin_path_argument, env
from v6nat_ebpf.errors import V6natError
from v6nat_ebpf.model import PROTOCOL_NUMBERS, protocol_name

EPILOG = """\
examples:
  sudo v6nat trace --port 8080                   every packet to or from port 8080, any hook
  sudo v6nat trace --addr 2001:db8:5::/48 --proto tcp --count 20
  sudo v6nat trace --mapping 8080/tcp --json     the flows of one published port, as JSON lines
  sudo v6nat trace --container web --drops       what is dropped of one container's traffic
  sudo v6nat trace --drops --timeout 30          only what is dropped, and why
"""


def _prefix(text: str) -> ipaddress.IPv6Network:
    try:
        return ipaddress.IPv6Network(text, strict=False)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IPv6 address or prefix") from None


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)")
    return int(text)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return int(text)


def _mapping_id(dp: Any, spec: str) -> int:
    """A mapping id, given as a number or as PORT/PROTO of a published port."""
    if spec.isdigit():
        return int(spec)
    port, _, proto = spec.partition("/")
    if not port.isdigit() or proto not in ("tcp", "udp"):
        raise V6natError(f"--mapping {spec!r}: give a mapping id or PORT/tcp|udp (e.g. 8080/tcp)")
    ids = sorted({target.mapping_id for key, target in dp.dnat.items()
                  if key.host_port == int(port) and key.proto == PROTOCOL_NUMBERS[proto] and target.mapping_id})
    if not ids:
        raise V6natError(f"--mapping {spec}: no such published port in the datapath (see `v6nat check --port {spec}`)")
    if len(ids) > 1:
        raise V6natError(f"--mapping {spec}: published several times (mapping ids {', '.join(map(str, ids))}): "
                         f"give one id")
    return ids[0]


def _container_prefix(name: str, docker_host: str | None) -> ipaddress.IPv6Network:
    """The one global IPv6 address of a container, as a /128 (its flows before and after translation)."""
    import docker

    from v6nat_ebpf.config import docker_url

    url = docker_url(docker_host)
    try:
        client = docker.APIClient(base_url=url, timeout=10)
        data = client.inspect_container(name)
    except Exception as exc:  # the SDK raises DockerException, requests and OS errors alike
        raise V6natError(f"--container {name}: {str(exc).splitlines()[0][:160]}") from None
    addrs = sorted({ep.get("GlobalIPv6Address") for ep in ((data.get("NetworkSettings") or {}).get("Networks")
                                                           or {}).values() if ep.get("GlobalIPv6Address")})
    if len(addrs) != 1:
        raise V6natError(f"--container {name}: it has {len(addrs) or 'no'} IPv6 addresses ({', '.join(addrs)}); "
                         f"give --addr instead")
    return ipaddress.IPv6Network(f"{addrs[0]}/128")


def _end(addr: Any, port: int) -> str:
    return f"[{addr}]:{port}"


def event_line(ev: Any) -> str:
    """One event as text: time, hook, protocol, before => after, verdict, why, flow."""
    wall = time.time() - (time.clock_gettime_ns(time.CLOCK_MONOTONIC) - ev.ts_ns) / 1e9
    stamp = time.strftime("%H:%M:%S", time.localtime(wall)) + f".{int(wall * 1000) % 1000:03d}"
    before = f"{_end(ev.before.saddr, ev.before.sport)} > {_end(ev.before.daddr, ev.before.dport)}"
    after = (f" => {_end(ev.after.saddr, ev.after.sport)} > {_end(ev.after.daddr, ev.after.dport)}"
             if ev.translated else "")
    verdict = f"drop reason={ev.drop_reason}" if ev.verdict == "drop" else ev.verdict
    flow = f" flow={ev.kind}/{ev.direction}" if ev.kind else ""
    mapping = f" mapping={ev.mapping_id}" if ev.mapping_id else ""
    return f"{stamp} {ev.hook:<14} {protocol_name(ev.proto):<6} {before}{after} {verdict}{flow}{mapping}"


def _json_value(value: Any) -> Any:
    return str(value) if isinstance(value, ipaddress.IPv6Address) else value


def event_json(ev: Any) -> str:
    record = dataclasses.asdict(ev, dict_factory=lambda kv: {k: _json_value(v) for k, v in kv})
    record["proto"] = protocol_name(ev.proto)
    record["translated"] = ev.translated
    return json.dumps(record)


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # the tracer's `finally` restores the filter


def cmd_trace(args: argparse.Namespace) -> int:
    from v6nat_ebpf.commands import open_pinned_datapath
    from v6nat_ebpf.datapath.trace import TraceFilter

    if args.container and args.addr:
        raise V6natError("give --addr or --container, not both")
    prefix = _container_prefix(args.container, args.docker_host) if args.container else args.addr
    dp = open_pinned_datapath(args.pin_path)
    want = TraceFilter(prefix=prefix, port=args.port,
                       proto=PROTOCOL_NUMBERS[args.proto] if args.proto else None,
                       mapping_id=_mapping_id(dp, args.mapping) if args.mapping else None,
                       drops_only=args.drops, rate=args.rate)
    deadline = time.monotonic() + args.timeout if args.timeout else None
    shown = 0
    previous = signal.signal(signal.SIGTERM, _terminate)
    tracer = dp.tracer()
    try:
        tracer.start(want)
        print(f"v6nat trace: on, {args.count} events at most; Ctrl-C to stop", file=sys.stderr, flush=True)
        while shown < args.count and not (deadline and time.monotonic() >= deadline):
            for ev in tracer.poll(100)[:args.count - shown]:
                print(event_json(ev) if args.json else event_line(ev), flush=True)
                shown += 1
    except KeyboardInterrupt:
        pass
    finally:
        tracer.stop()
        signal.signal(signal.SIGTERM, previous)
        losses = tracer.losses()
        dp.close()
    if losses.limited or losses.lost:
        print(f"v6nat trace: {shown} events shown; not sent by the kernel: {losses.limited} over the rate limit "
              f"(--rate {args.rate}), {losses.lost} with the ring buffer full", file=sys.stderr)
    else:
        print(f"v6nat trace: {shown} events shown", file=sys.stderr)
    return 0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "trace", help="watch what the datapath does to matching packets, live",
        description="Show, one line per packet per hook, what v6nat's programs did: the tuple before and after, "
                    "the verdict, the drop reason, the flow. Filtered and rate-limited in the kernel; the "
                    "programs pay one check per packet while nobody traces.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--addr", type=_prefix, metavar="ADDR[/LEN]",
                        help="only packets with an address in this prefix at either end, before or after translation")
    parser.add_argument("--container", metavar="NAME",
                        help="only packets of this container (its IPv6 address, before or after translation)")
    parser.add_argument("--docker-host", metavar="URL", default=env("DOCKER_HOST"),
                        help="with --container: the Docker API (env V6NAT_DOCKER_HOST; default $DOCKER_HOST or the "
                             "local socket)")
    parser.add_argument("--port", type=_port, help="only packets with this port at either end, before or after")
    parser.add_argument("--proto", choices=sorted(PROTOCOL_NUMBERS), help="only this protocol")
    parser.add_argument("--mapping", metavar="ID|PORT/PROTO",
                        help="only the flows of this published port (mapping id, or e.g. 8080/tcp)")
    parser.add_argument("--drops", action="store_true", help="only packets the programs drop")
    parser.add_argument("--count", type=_positive, default=100, help="stop after this many events (default 100)")
    parser.add_argument("--timeout", type=_positive, metavar="SECONDS", help="stop after this long")
    parser.add_argument("--rate", type=_positive, default=200,
                        help="events per second and CPU the kernel sends at most (default 200)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    add_pin_path_argument(parser)
    parser.set_defaults(func=cmd_trace)
