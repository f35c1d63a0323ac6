/**
 * A bounded packet flood from one namespace: prepared frames sent through an AF_PACKET socket
 * with sendmmsg(2), 1024 frames per system call, bypassing the qdisc. Node cannot send fast
 * enough one datagram at a time (a syscall plus a JS→C call per packet would be most of the
 * cost); with frames prepared once in native memory the sender's share per packet is the kernel's
 * own AF_PACKET transmit, identical for every receiver that is compared.
 *
 * On a veth pair the receiving side runs in softirq on the sending CPU, right after each frame is
 * handed over, so a flood measures one core doing both halves: the same sender work for every
 * configuration plus the receiver's path up to where the packet is dropped.
 */
import koffi from 'koffi';
import { readdirSync, readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { check, libc } from '../../../netns/libc.js';
import { loadLibc } from '../../../netns/libc.js';
import { withNetns } from '../../../netns/setns.js';
import { NativeBlock } from '../../../bpf/sys.js';

const AF_PACKET = 17;
const SOCK_RAW = 3;
const SOCK_CLOEXEC = 0o2000000;
const SOL_PACKET = 263;
const PACKET_QDISC_BYPASS = 20;
const ETH_P_IP = 0x0800;
const ENOBUFS = 105;
/** The kernel caps sendmmsg's vector at UIO_MAXIOV. */
export const FLOOD_BATCH = 1024;

// LP64 layouts (x86_64, arm64): struct iovec and struct mmsghdr (msghdr + msg_len + padding).
const IOVEC_SIZE = 16;
const MMSGHDR_SIZE = 64;
const MSG_IOV = 16;
const MSG_IOVLEN = 24;

interface Native {
  sendmmsg(fd: number, vec: unknown, vlen: number, flags: number): number;
}

let native: Native | undefined;

function bindings(): Native {
  if (native) return native;
  const lib = loadLibc();
  native = {
    sendmmsg: lib.func(
      'int sendmmsg(int fd, void *msgvec, unsigned int vlen, int flags)',
    ) as Native['sendmmsg'],
  };
  return native;
}

/**
 * The frames and their iovecs in one block, and per batch of up to 1024 frames a block of
 * mmsghdrs pointing at them: built once, so a send is one call with no marshalling.
 */
class FrameRing {
  private readonly data: NativeBlock;
  private readonly headers: { block: NativeBlock; count: number }[] = [];

  constructor(frames: readonly Buffer[]) {
    const slot = Math.ceil(Math.max(...frames.map((f) => f.length)) / 64) * 64;
    const iovAt = frames.length * slot;
    this.data = new NativeBlock(iovAt + frames.length * IOVEC_SIZE);
    const { buffer: view, address } = this.data;
    frames.forEach((frame, i) => {
      frame.copy(view, i * slot);
      view.writeBigUInt64LE(address + BigInt(i * slot), iovAt + i * IOVEC_SIZE);
      view.writeBigUInt64LE(BigInt(frame.length), iovAt + i * IOVEC_SIZE + 8);
    });
    for (let first = 0; first < frames.length; first += FLOOD_BATCH) {
      const count = Math.min(FLOOD_BATCH, frames.length - first);
      const block = new NativeBlock(count * MMSGHDR_SIZE);
      for (let j = 0; j < count; j++) {
        const iov = address + BigInt(iovAt + (first + j) * IOVEC_SIZE);
        block.buffer.writeBigUInt64LE(iov, j * MMSGHDR_SIZE + MSG_IOV);
        block.buffer.writeBigUInt64LE(1n, j * MMSGHDR_SIZE + MSG_IOVLEN);
      }
      this.headers.push({ block, count });
    }
  }

  get batchCount(): number {
    return this.headers.length;
  }

  batch(i: number): { pointer: unknown; count: number } {
    const h = this.headers[i];
    if (!h) throw new Error(`no batch ${i}`);
    return { pointer: h.block.native, count: h.count };
  }

  free(): void {
    for (const h of this.headers) h.block.free();
    this.data.free();
  }
}

export interface FloodResult {
  sent: number;
  elapsedMs: number;
  /**
   * Time the sending thread was on a CPU (schedstat), which on a veth includes the receive path
   * run in softirq on its way out of each send. Unlike the wall clock it leaves out time the
   * thread waited for a CPU, which on a busy machine can be most of it.
   */
  cpuMs: number;
  /** ksoftirqd CPU time over the window: receive work deferred there is not in cpuMs. */
  ksoftirqdMs: number;
}

/** Nanoseconds a task has run (first field of schedstat). */
function runtimeNs(path: string): number {
  return Number(readFileSync(path, 'utf8').split(' ')[0]);
}

let ksoftirqdPaths: string[] | undefined;

function ksoftirqdNs(): number {
  ksoftirqdPaths ??= readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((d) => {
      try {
        return readFileSync(`/proc/${d}/comm`, 'utf8').startsWith('ksoftirqd/');
      } catch {
        return false;
      }
    })
    .map((d) => `/proc/${d}/schedstat`);
  return ksoftirqdPaths.reduce((sum, p) => sum + runtimeNs(p), 0);
}

/** An AF_PACKET socket bound to one interface of a namespace, with frames ready to send. */
export class PacketFlood {
  private constructor(
    private readonly fd: number,
    private readonly ring: FrameRing,
  ) {}

  static open(netns: string, ifname: string, frames: readonly Buffer[]): PacketFlood {
    if (frames.length === 0) throw new Error('a flood needs at least one frame');
    const c = libc();
    // Protocol 0: the socket only sends, so the kernel never queues received copies to it.
    const fd = withNetns(netns, () => {
      const s = check(c.socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0), `AF_PACKET socket in ${netns}`);
      try {
        const ifindex = c.ifNameToIndex(ifname);
        if (ifindex === 0) throw new Error(`no interface ${ifname} in ${netns}`);
        const sll = Buffer.alloc(20);
        sll.writeUInt16LE(AF_PACKET, 0);
        sll.writeUInt16BE(ETH_P_IP, 2);
        sll.writeInt32LE(ifindex, 4);
        check(c.bind(s, sll, sll.length), `bind AF_PACKET to ${ifname}`);
        const one = Buffer.alloc(4);
        one.writeInt32LE(1);
        check(c.setsockopt(s, SOL_PACKET, PACKET_QDISC_BYPASS, one, 4), 'PACKET_QDISC_BYPASS');
        return s;
      } catch (e) {
        c.close(s);
        throw e;
      }
    });
    return new PacketFlood(fd, new FrameRing(frames));
  }

  /**
   * Sends for `durationMs` (or until `maxPackets`), cycling through the frames. Blocks the event
   * loop on purpose: the window is short and nothing else should share the core meanwhile.
   */
  run(durationMs: number, maxPackets = Number.POSITIVE_INFINITY): FloodResult {
    const send = bindings().sendmmsg;
    let sent = 0;
    let batch = 0;
    const softStart = ksoftirqdNs();
    const cpuStart = runtimeNs('/proc/thread-self/schedstat');
    const start = performance.now();
    let now = start;
    while (now - start < durationMs && sent < maxPackets) {
      const { pointer, count } = this.ring.batch(batch);
      batch = (batch + 1) % this.ring.batchCount;
      const n = send(this.fd, pointer, count, 0);
      if (n < 0) {
        const errno = koffi.errno();
        // A full receive ring on the far side: the frame is lost, the flood goes on.
        if (errno !== ENOBUFS) throw new Error(`sendmmsg failed: errno ${errno}`);
      } else sent += n;
      now = performance.now();
    }
    const cpuMs = (runtimeNs('/proc/thread-self/schedstat') - cpuStart) / 1e6;
    return { sent, elapsedMs: now - start, cpuMs, ksoftirqdMs: (ksoftirqdNs() - softStart) / 1e6 };
  }

  close(): void {
    libc().close(this.fd);
    this.ring.free();
  }
}
