/**
 * A few rtnetlink requests sent from inside a namespace without forking `ip`: configuring one
 * interface costs microseconds instead of a process start, which is most of a lab's start-up
 * when pods are many. Requests are synchronous (send, then read the kernel's ack), so they can
 * run on a thread that setns(2)-ed into the namespace. Little-endian hosts (x86_64, arm64).
 */
import { isIPv4, isIPv6 } from 'node:net';
import { parseAddress } from '../util/ip.js';
import { check, libc, SOCK_CLOEXEC } from './libc.js';
import {
  ackErrno,
  AF_NETLINK,
  NLM_F_ACK,
  netlinkAttribute as attr,
  netlinkRequest,
  packStruct,
  SOCK_RAW,
} from './netlink.js';
import { withNetns } from './setns.js';

const AF_INET = 2;
const AF_INET6 = 10;
const NETLINK_ROUTE = 0;

const NLM_F_REPLACE = 0x100;
const NLM_F_EXCL = 0x200;
const NLM_F_CREATE = 0x400;

const RTM_NEWLINK = 16;
const RTM_NEWADDR = 20;
const RTM_NEWROUTE = 24;
const RTM_NEWNEIGH = 28;

const IFF_UP = 0x1;
const IFLA_AF_SPEC = 26;
const IFLA_INET6_ADDR_GEN_MODE = 8;
const IN6_ADDR_GEN_MODE_NONE = 1;
const IFA_ADDRESS = 1;
const IFA_LOCAL = 2;
/** ifa_flags: no duplicate address detection (lab addresses are unique by allocation). */
const IFA_F_NODAD = 0x02;
const RTA_DST = 1;
const RTA_OIF = 4;
const RTA_GATEWAY = 5;
const RT_TABLE_MAIN = 254;
const RTPROT_BOOT = 3;
const RT_SCOPE_UNIVERSE = 0;
const RT_SCOPE_LINK = 253;
const RTN_UNICAST = 1;
const NDA_DST = 1;
const NDA_LLADDR = 2;
const NUD_PERMANENT = 0x80;
/** lo is always the first interface of a namespace. */
const LOOPBACK_INDEX = 1;

function u8(v: number): Buffer {
  return Buffer.from([v]);
}

function u32(v: number): Buffer {
  return packStruct(4, [[0, 'u32', v]]);
}

function ipv4(a: string): Buffer {
  if (!isIPv4(a)) throw new Error(`not an IPv4 address: ${a}`);
  return Buffer.from(a.split('.').map(Number));
}

function ipv6(a: string): Buffer {
  const parsed = isIPv6(a) ? parseAddress(a) : undefined;
  if (parsed?.family !== 6) throw new Error(`not an IPv6 address: ${a}`);
  return Buffer.from(parsed.value.toString(16).padStart(32, '0'), 'hex');
}

function mac(m: string): Buffer {
  const bytes = m.split(':').map((h) => parseInt(h, 16));
  if (bytes.length !== 6 || bytes.some((b) => !(b >= 0 && b <= 255)))
    throw new Error(`not a MAC address: ${m}`);
  return Buffer.from(bytes);
}

/** struct ifinfomsg (family AF_UNSPEC). */
function ifinfo(index: number, flags: number, change: number): Buffer {
  return packStruct(16, [
    [4, 'i32', index],
    [8, 'u32', flags],
    [12, 'u32', change],
  ]);
}

/** struct ifaddrmsg. */
function ifaddr(prefixLength: number, index: number, family = AF_INET, flags = 0): Buffer {
  return packStruct(8, [
    [0, 'u8', family],
    [1, 'u8', prefixLength],
    [2, 'u8', flags],
    [4, 'u32', index],
  ]);
}

function rtmsg(dstLength: number, scope: number, family = AF_INET): Buffer {
  return Buffer.from([family, dstLength, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, scope, RTN_UNICAST, 0, 0, 0, 0]);
}

/** struct ndmsg. */
function ndmsg(index: number, state: number, family = AF_INET): Buffer {
  return packStruct(12, [
    [0, 'u8', family],
    [4, 'i32', index],
    [8, 'u16', state],
  ]);
}

interface Request {
  what: string;
  type: number;
  flags: number;
  body: Buffer[];
}

class RouteSocket {
  private readonly fd: number;
  private seq = 0;
  private readonly reply = Buffer.alloc(8192);

  constructor() {
    this.fd = check(libc().socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE), 'netlink socket');
  }

  /** Sends one request and waits for the kernel's acknowledgement; a refusal throws with errno's text. */
  request(r: Request): void {
    const c = libc();
    const seq = ++this.seq;
    const msg = netlinkRequest(r.type, NLM_F_ACK | r.flags, seq, Buffer.concat(r.body));
    check(c.send(this.fd, msg, msg.length, 0), `netlink send (${r.what})`);
    for (;;) {
      const n = check(c.recv(this.fd, this.reply, this.reply.length, 0), `netlink receive (${r.what})`);
      const errno = ackErrno(this.reply, n, seq);
      if (errno === 0) return;
      if (errno !== undefined) throw Object.assign(new Error(`${r.what}: ${c.strerror(errno)}`), { errno });
    }
  }

  close(): void {
    libc().close(this.fd);
  }
}

export interface EndpointInterface {
  /** Interface already in the namespace (a veth end moved there at creation). */
  name: string;
  /** Configured as a /32. */
  address: string;
  /** Link-scoped next hop for the default route (Calico's 169.254.1.1). */
  gateway: string;
  /** MAC of the next hop, installed as a permanent neighbour so no ARP is ever needed for it. */
  gatewayMac: string;
  /**
   * IPv6: the address (a /128, no duplicate detection) and the link-local next hop of the
   * default route (the host end's fe80::1), with a permanent neighbour entry at `gatewayMac`.
   */
  v6?: { address: string; gateway: string };
}

/** The IPv6 half of configureEndpointInterface, on an interface that is already up. */
function configureV6(
  sock: RouteSocket,
  index: number,
  where: string,
  v6: { address: string; gateway: string },
  gatewayMac: string,
): void {
  sock.request({
    what: `address ${v6.address}/128 on ${where}`,
    type: RTM_NEWADDR,
    flags: NLM_F_CREATE | NLM_F_EXCL,
    body: [ifaddr(128, index, AF_INET6, IFA_F_NODAD), attr(IFA_ADDRESS, ipv6(v6.address))],
  });
  sock.request({
    what: `default route via ${v6.gateway} on ${where}`,
    type: RTM_NEWROUTE,
    flags: NLM_F_CREATE | NLM_F_EXCL,
    body: [
      rtmsg(0, RT_SCOPE_UNIVERSE, AF_INET6),
      attr(RTA_GATEWAY, ipv6(v6.gateway)),
      attr(RTA_OIF, u32(index)),
    ],
  });
  sock.request({
    what: `neighbour ${v6.gateway} on ${where}`,
    type: RTM_NEWNEIGH,
    flags: NLM_F_CREATE | NLM_F_REPLACE,
    body: [
      ndmsg(index, NUD_PERMANENT, AF_INET6),
      attr(NDA_DST, ipv6(v6.gateway)),
      attr(NDA_LLADDR, mac(gatewayMac)),
    ],
  });
}

/**
 * Inside `netns`: lo and the interface up (the latter without IPv6 link-local), the address as a
 * /32, a link route to the gateway, the default route via it and a permanent neighbour entry for
 * it. The equivalent of six `ip` commands, in one setns round trip.
 */
export function configureEndpointInterface(netns: string, e: EndpointInterface): void {
  withNetns(netns, () => {
    const index = libc().ifNameToIndex(e.name);
    if (index === 0) throw new Error(`no interface ${e.name} in ${netns}`);
    const sock = new RouteSocket();
    const where = `${e.name} in ${netns}`;
    try {
      sock.request({
        what: `lo up in ${netns}`,
        type: RTM_NEWLINK,
        flags: 0,
        body: [ifinfo(LOOPBACK_INDEX, IFF_UP, IFF_UP)],
      });
      sock.request({
        what: `addrgenmode none on ${where}`,
        type: RTM_NEWLINK,
        flags: 0,
        body: [
          ifinfo(index, 0, 0),
          attr(IFLA_AF_SPEC, attr(AF_INET6, attr(IFLA_INET6_ADDR_GEN_MODE, u8(IN6_ADDR_GEN_MODE_NONE)))),
        ],
      });
      sock.request({
        what: `${where} up`,
        type: RTM_NEWLINK,
        flags: 0,
        body: [ifinfo(index, IFF_UP, IFF_UP)],
      });
      sock.request({
        what: `address ${e.address}/32 on ${where}`,
        type: RTM_NEWADDR,
        flags: NLM_F_CREATE | NLM_F_EXCL,
        body: [ifaddr(32, index), attr(IFA_LOCAL, ipv4(e.address)), attr(IFA_ADDRESS, ipv4(e.address))],
      });
      sock.request({
        what: `route ${e.gateway} dev ${where}`,
        type: RTM_NEWROUTE,
        flags: NLM_F_CREATE | NLM_F_EXCL,
        body: [rtmsg(32, RT_SCOPE_LINK), attr(RTA_DST, ipv4(e.gateway)), attr(RTA_OIF, u32(index))],
      });
      sock.request({
        what: `default route via ${e.gateway} on ${where}`,
        type: RTM_NEWROUTE,
        flags: NLM_F_CREATE | NLM_F_EXCL,
        body: [rtmsg(0, RT_SCOPE_UNIVERSE), attr(RTA_GATEWAY, ipv4(e.gateway)), attr(RTA_OIF, u32(index))],
      });
      sock.request({
        what: `neighbour ${e.gateway} on ${where}`,
        type: RTM_NEWNEIGH,
        flags: NLM_F_CREATE | NLM_F_REPLACE,
        body: [
          ndmsg(index, NUD_PERMANENT),
          attr(NDA_DST, ipv4(e.gateway)),
          attr(NDA_LLADDR, mac(e.gatewayMac)),
        ],
      });
      if (e.v6) configureV6(sock, index, where, e.v6, e.gatewayMac);
    } finally {
      sock.close();
    }
  });
}
