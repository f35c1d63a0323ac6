/**
 * Packets the lab's TCP/UDP prober cannot send, from Python raw sockets inside pod namespaces:
 * ICMP echo (the destination's kernel answers), SCTP INIT (with its CRC32c, or conntrack would
 * call it invalid) and GRE (an IP protocol with no ports), seen arriving by a raw listener in the
 * destination pod; and bursts of UDP datagrams from distinct source ports (each a new
 * connection, so each one is decided by policy).
 */
import { spawn } from 'node:child_process';

const SCRIPT = String.raw`
import json, socket, struct, sys, time
args = json.loads(sys.argv[-1])
cmd = args['cmd']

def crc32c(data):
    crc = 0xffffffff
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xffffffff

def sctp_init(sport, dport):
    chunk = struct.pack('!BBHIIHHI', 1, 0, 20, 0x1234 + sport, 65535, 1, 1, 1)
    head = struct.pack('!HHII', sport, dport, 0, 0)
    crc = crc32c(head + chunk)
    return struct.pack('!HHI', sport, dport, 0) + struct.pack('<I', crc) + chunk

if cmd == 'listen':
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, args['proto'])
    s.settimeout(0.05)
    print('ready', flush=True)
    seen = 0
    end = time.time() + args['ms'] / 1000
    while time.time() < end:
        try:
            pkt, addr = s.recvfrom(65535)
        except socket.timeout:
            continue
        ihl = (pkt[0] & 15) * 4
        if addr[0] != args['src']:
            continue
        if args['proto'] == 132 and struct.unpack('!H', pkt[ihl + 2:ihl + 4])[0] != args['dport']:
            continue
        seen += 1
    print(json.dumps({'seen': seen}), flush=True)
elif cmd == 'send':
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, args['proto'])
    for i in range(args['count']):
        payload = sctp_init(40000 + i, args['dport']) if args['proto'] == 132 else b'\x00\x00\x08\x00' + b'probe'
        s.sendto(payload, (args['dst'], 0))
        time.sleep(0.05)
    print(json.dumps({'sent': args['count']}), flush=True)
elif cmd == 'ping':
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.settimeout(0.05)
    got = 0
    for seq in range(args['count']):
        body = struct.pack('!BBHHH', 8, 0, 0, 0x5359, seq) + b'probe'
        total = sum(struct.unpack('!%dH' % (len(body) // 2), body[:len(body) // 2 * 2])) + (body[-1] << 8 if len(body) % 2 else 0)
        while total >> 16:
            total = (total & 0xffff) + (total >> 16)
        body = body[:2] + struct.pack('!H', ~total & 0xffff) + body[4:]
        s.sendto(body, (args['dst'], 0))
        end = time.time() + args['ms'] / 1000
        while time.time() < end:
            try:
                pkt, addr = s.recvfrom(65535)
            except socket.timeout:
                continue
            ihl = (pkt[0] & 15) * 4
            if addr[0] == args['dst'] and pkt[ihl] == 0 and struct.unpack('!H', pkt[ihl + 6:ihl + 8])[0] == seq:
                got += 1
                break
    print(json.dumps({'replies': got}), flush=True)
elif cmd == 'udp':
    sent = 0
    gap = 1 / args['pps']
    start = time.time()
    for i in range(args['count']):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        u.bind(('0.0.0.0', args['firstSport'] + i))
        u.sendto(b'probe', (args['dst'], args['dport']))
        u.close()
        sent += 1
        delay = start + (i + 1) * gap - time.time()
        if delay > 0:
            time.sleep(delay)
    print(json.dumps({'sent': sent}), flush=True)
`;

interface Running {
  /** Resolves once the script printed `ready` (listeners) or at once (others). */
  ready: Promise<void>;
  result: Promise<Record<string, number>>;
}

function run(netns: string, args: Record<string, unknown>): Running {
  const child = spawn('ip', ['netns', 'exec', netns, 'python3', '-c', SCRIPT, JSON.stringify(args)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  let markReady: () => void = () => undefined;
  const ready = new Promise<void>((resolve) => (markReady = resolve));
  child.stdout.setEncoding('utf8').on('data', (c: string) => {
    out += c;
    if (out.includes('ready')) markReady();
  });
  child.stderr.setEncoding('utf8').on('data', (c: string) => (err += c));
  const result = new Promise<Record<string, number>>((resolve, reject) => {
    child.on('exit', (code) => {
      markReady();
      const line = out
        .split('\n')
        .reverse()
        .find((l) => l.startsWith('{'));
      if (code !== 0 || !line)
        reject(new Error(`raw probe ${String(args.cmd)} in ${netns} failed (${code}): ${err}`));
      else resolve(JSON.parse(line) as Record<string, number>);
    });
  });
  return { ready: args.cmd === 'listen' ? ready : Promise.resolve(), result };
}

export const IPPROTO = { SCTP: 132, GRE: 47 } as const;

/**
 * Whether `count` raw packets of `proto` (SCTP INIT to `dport`, or GRE) from `src` in `srcNetns`
 * reach `dst` in `dstNetns`, counted by a raw listener there.
 */
export async function rawReaches(
  srcNetns: string,
  dstNetns: string,
  src: string,
  dst: string,
  proto: number,
  dport = 0,
  count = 3,
): Promise<boolean> {
  const listener = run(dstNetns, { cmd: 'listen', proto, src, dport, ms: 150 * count + 700 });
  await listener.ready;
  await run(srcNetns, { cmd: 'send', proto, dst, dport, count }).result;
  return ((await listener.result).seen ?? 0) > 0;
}

/** ICMP echo: whether any of `count` requests is answered. */
export async function pings(netns: string, dst: string, count = 2, waitMs = 400): Promise<boolean> {
  return ((await run(netns, { cmd: 'ping', dst, count, ms: waitMs }).result).replies ?? 0) > 0;
}

/** `count` UDP datagrams to dst:dport at `pps`, from source ports firstSport, firstSport+1, … */
export async function udpBurst(
  netns: string,
  dst: string,
  dport: number,
  firstSport: number,
  count: number,
  pps: number,
): Promise<number> {
  return (await run(netns, { cmd: 'udp', dst, dport, firstSport, count, pps }).result).sent ?? 0;
}
