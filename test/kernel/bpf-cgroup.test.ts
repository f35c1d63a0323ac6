import { spawn } from 'node:child_process';
import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  Assembler,
  attachCgroup,
  BpfMap,
  codecs,
  Program,
  R0,
  R1,
  R2,
  R6,
  R10,
  type Link,
} from '../../src/bpf/index.js';
import { describeKernel } from '../support/kernel.js';
import { nodeInNetns, NetnsProcess, TestCgroup, TestNetns } from './bpf-lab.js';

const endpoint = codecs.struct({ ip: codecs.ipv4, port: codecs.be16 });

/** struct bpf_sock_addr offsets (include/uapi/linux/bpf.h). */
const USER_IP4 = 4;
const USER_PORT = 24;

/** connect4: if (ip, port) is a service, rewrite the destination to its backend. */
function connectRewriteProgram() {
  const key = -8;
  return new Assembler()
    .mov64(R6, R1)
    .ldxw(R2, R6, USER_IP4)
    .stx('w', R10, key + endpoint.offsets.ip, R2)
    .ldxw(R2, R6, USER_PORT) // port in network order in the low 16 bits
    .stx('h', R10, key + endpoint.offsets.port, R2)
    .st('h', R10, key + 6, 0) // struct padding must match the zeroed key written from user space
    .ldMap(R1, 'services')
    .mov64(R2, R10)
    .add64(R2, key)
    .call('map_lookup_elem')
    .jeq(R0, 0, 'allow')
    .ldxw(R2, R0, endpoint.offsets.ip)
    .stx('w', R6, USER_IP4, R2)
    .ldxh(R2, R0, endpoint.offsets.port)
    .stx('w', R6, USER_PORT, R2)
    .label('allow')
    .exitWith(1)
    .assemble();
}

const SERVER = `
import net from 'node:net';
const { host, port } = JSON.parse(process.argv.at(-1));
net.createServer((socket) => socket.end('hello from ' + socket.localAddress + ':' + socket.localPort + '\\n'))
  .listen(port, host, () => console.log('ready'));
`;

const CLIENT = `
import net from 'node:net';
const { host, port } = JSON.parse(process.argv.at(-1));
const socket = net.connect({ host, port });
let data = '';
socket.on('data', (chunk) => (data += chunk));
socket.on('end', () => console.log(JSON.stringify({ ok: true, data: data.trim(), remote: socket.remoteAddress + ':' + socket.remotePort })));
socket.on('error', (err) => console.log(JSON.stringify({ ok: false, error: err.code })));
`;

describeKernel('bpf: cgroup connect4 rewrite', () => {
  let netns: TestNetns;
  let cgroup: TestCgroup;
  let services: BpfMap<codecs.CodecValue<typeof endpoint>, codecs.CodecValue<typeof endpoint>>;
  let program: Program;
  let link: Link | undefined;
  let server: NetnsProcess | undefined;

  beforeAll(async () => {
    netns = TestNetns.create('cg');
    netns.ip('addr', 'add', '198.18.13.10/32', 'dev', 'lo');
    cgroup = TestCgroup.create('connect');
    services = BpfMap.create({
      type: 'hash',
      name: 'services',
      key: endpoint,
      value: endpoint,
      maxEntries: 16,
    });
    services.update({ ip: '198.19.0.10', port: 80 }, { ip: '198.18.13.10', port: 8080 });
    program = Program.load({
      name: 'connect4_svc',
      type: 'cgroup_sock_addr',
      expectedAttachType: 'cgroup_inet4_connect',
      instructions: connectRewriteProgram(),
      maps: { services },
    });
    server = nodeInNetns(netns, SERVER, { host: '198.18.13.10', port: 8080 });
    await server.waitFor('ready');
  });

  afterAll(async () => {
    server?.kill();
    link?.close();
    program?.close();
    services?.close();
    netns?.delete();
    await cgroup?.remove();
  });

  /** A client in the namespace; in the test cgroup when asked, via a shell that joins it then execs. */
  function connect(
    inCgroup: boolean,
  ): Promise<{ ok: boolean; data?: string; remote?: string; error?: string }> {
    const join = inCgroup ? `echo $$ > '${cgroup.path}/cgroup.procs' && ` : '';
    const args = JSON.stringify({ host: '198.19.0.10', port: 80 });
    const command = `${join}exec ip netns exec '${netns.name}' '${process.execPath}' --input-type=module -e "$0" '${args}'`;
    const child = new NetnsProcess(
      spawn('sh', ['-c', command, CLIENT], { stdio: ['ignore', 'pipe', 'pipe'] }),
    );
    return child.result();
  }

  it('rewrites the destination of connect() for processes in the cgroup only', async () => {
    const outside = await connect(false);
    expect(outside).toMatchObject({ ok: false });

    link = attachCgroup(program, { cgroup: cgroup.path, attachType: 'cgroup_inet4_connect' });
    expect(link.info()).toMatchObject({ type: 'cgroup', programId: program.id });

    const inside = await connect(true);
    expect(inside).toMatchObject({
      ok: true,
      data: 'hello from 198.18.13.10:8080',
      remote: '198.18.13.10:8080',
    });

    const stillOutside = await connect(false);
    expect(stillOutside).toMatchObject({ ok: false });
  });
});
