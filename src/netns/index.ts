/** Network namespaces, veth plumbing through `ip -batch`, cgroups and running things inside them. Knows nothing about policy. */
export * from './errors.js';
export * from './tools.js';
export * from './run.js';
export * from './pool.js';
export * from './ipbatch.js';
export * from './namespaces.js';
export * from './setns.js';
export * from './sysctl.js';
export * from './sockets.js';
export * from './cgroup.js';
export * from './spawn.js';
export * from './rtnetlink.js';
