/**
 * zod schemas for every accepted manifest kind. NetworkPolicy and the switchyard kinds are strict
 * (an unknown field is an error: a typo like `ingres` must not silently allow traffic); Pod, Service
 * and Namespace carry many fields we do not use (images, resources), so only their metadata and the
 * parts we read are checked.
 */
import { z } from 'zod';
import { parseAddress, parseCidr } from '../util/ip.js';
import { excerpt } from './errors.js';
import {
  dns1123LabelError,
  dns1123SubdomainError,
  labelKeyError,
  labelValueError,
  portNameError,
} from './names.js';

function refineWith(check: (v: string) => string | undefined) {
  return (v: string, ctx: z.core.$RefinementCtx<string>): void => {
    const e = check(v);
    if (e) ctx.addIssue({ code: 'custom', message: e });
  };
}

const labelsSchema = z.record(z.string(), z.string()).superRefine((labels, ctx) => {
  for (const [k, v] of Object.entries(labels)) {
    const e = labelKeyError(k) ?? labelValueError(v);
    if (e) ctx.addIssue({ code: 'custom', message: e, path: [k] });
  }
});

/** ObjectMeta: the fields a real manifest carries; anything else is a typo. */
const metadataFields = {
  labels: labelsSchema.optional(),
  annotations: z.record(z.string(), z.string()).optional(),
  uid: z.string().optional(),
  resourceVersion: z.string().optional(),
  generation: z.number().optional(),
  creationTimestamp: z.union([z.string(), z.null()]).optional(),
  generateName: z.string().optional(),
  finalizers: z.array(z.string()).optional(),
  ownerReferences: z.array(z.unknown()).optional(),
  managedFields: z.array(z.unknown()).optional(),
};

export const namespacedMetadata = z.strictObject({
  name: z.string().superRefine(refineWith(dns1123SubdomainError)),
  namespace: z.string().superRefine(refineWith(dns1123LabelError)).optional(),
  ...metadataFields,
});

export const clusterMetadata = z.strictObject({
  name: z.string().superRefine(refineWith(dns1123SubdomainError)),
  ...metadataFields,
});

const namespaceMetadata = z.strictObject({
  name: z.string().superRefine(refineWith(dns1123LabelError)),
  ...metadataFields,
});

export const labelSelectorSchema = z.strictObject({
  matchLabels: labelsSchema.optional(),
  matchExpressions: z
    .array(
      z
        .strictObject({
          key: z.string().superRefine(refineWith(labelKeyError)),
          operator: z.enum(['In', 'NotIn', 'Exists', 'DoesNotExist']),
          values: z.array(z.string().superRefine(refineWith(labelValueError))).optional(),
        })
        .superRefine((req, ctx) => {
          const n = req.values?.length ?? 0;
          if ((req.operator === 'In' || req.operator === 'NotIn') && n === 0)
            ctx.addIssue({
              code: 'custom',
              path: ['values'],
              message: `operator ${req.operator} needs values`,
            });
          if ((req.operator === 'Exists' || req.operator === 'DoesNotExist') && n > 0)
            ctx.addIssue({
              code: 'custom',
              path: ['values'],
              message: `operator ${req.operator} takes no values`,
            });
        }),
    )
    .optional(),
});

const protocolSchema = z.enum(['TCP', 'UDP', 'SCTP']);
const portNumber = z.number().int().min(1, 'port must be 1-65535').max(65535, 'port must be 1-65535');
const portName = z.string().superRefine(refineWith(portNameError));

const cidrSchema = z.string().superRefine((v, ctx) => {
  if (!parseCidr(v))
    ctx.addIssue({ code: 'custom', message: `'${excerpt(v)}' is not a valid CIDR (a.b.c.d/n or x::/n)` });
});
const ipSchema = z.string().superRefine((v, ctx) => {
  if (!parseAddress(v))
    ctx.addIssue({ code: 'custom', message: `'${excerpt(v)}' is not a valid IP address` });
});

const ipBlockSchema = z
  .strictObject({ cidr: cidrSchema, except: z.array(cidrSchema).optional() })
  .superRefine((b, ctx) => {
    const outer = parseCidr(b.cidr);
    if (!outer) return;
    (b.except ?? []).forEach((e, i) => {
      const inner = parseCidr(e);
      if (!inner) return;
      if (inner.family !== outer.family || inner.prefix <= outer.prefix || !sameNetwork(outer, inner))
        ctx.addIssue({
          code: 'custom',
          path: ['except', i],
          message: `except ${e} must be a strict subset of cidr ${b.cidr}`,
        });
    });
  });

function sameNetwork(outer: NonNullable<ReturnType<typeof parseCidr>>, inner: typeof outer): boolean {
  const bits = outer.family === 4 ? 32 : 128;
  const shift = BigInt(bits - outer.prefix);
  return outer.base >> shift === inner.base >> shift;
}

const peerFields = {
  podSelector: labelSelectorSchema.optional(),
  namespaceSelector: labelSelectorSchema.optional(),
  ipBlock: ipBlockSchema.optional(),
};

function checkPeerShape(
  p: { podSelector?: unknown; namespaceSelector?: unknown; ipBlock?: unknown },
  ctx: z.core.$RefinementCtx<unknown>,
  extra = false,
): void {
  const selectors = p.podSelector !== undefined || p.namespaceSelector !== undefined;
  if (p.ipBlock !== undefined && selectors)
    ctx.addIssue({
      code: 'custom',
      path: ['ipBlock'],
      message: 'ipBlock cannot be combined with podSelector or namespaceSelector',
    });
  if (!extra && p.ipBlock === undefined && !selectors)
    ctx.addIssue({ code: 'custom', message: 'a peer needs podSelector, namespaceSelector or ipBlock' });
}

const networkPolicyPeerSchema = z.strictObject(peerFields).superRefine((p, ctx) => checkPeerShape(p, ctx));

const policyPortSchema = z
  .strictObject({
    protocol: protocolSchema.optional(),
    port: z.union([portNumber, portName]).optional(),
    endPort: portNumber.optional(),
  })
  .superRefine((p, ctx) => {
    if (p.endPort === undefined) return;
    if (typeof p.port !== 'number')
      ctx.addIssue({ code: 'custom', path: ['endPort'], message: 'endPort needs a numeric port' });
    else if (p.endPort < p.port)
      ctx.addIssue({
        code: 'custom',
        path: ['endPort'],
        message: `endPort ${p.endPort} is below port ${p.port}`,
      });
  });

const networkPolicyRule = (peerKey: 'from' | 'to') =>
  z.strictObject({
    [peerKey]: z.array(networkPolicyPeerSchema).optional(),
    ports: z.array(policyPortSchema).optional(),
  }) as z.ZodType<{ from?: RawPeer[]; to?: RawPeer[]; ports?: RawPolicyPort[] }>;

export type RawSelector = z.infer<typeof labelSelectorSchema>;
export type RawPolicyPort = z.infer<typeof policyPortSchema>;
export interface RawPeer {
  podSelector?: RawSelector;
  namespaceSelector?: RawSelector;
  ipBlock?: { cidr: string; except?: string[] };
  nets?: string[];
  notNets?: string[];
}

/**
 * As the API server validates it (ValidateNetworkPolicySpec): more than two entries is an error;
 * a repeated entry within two is accepted there, and means the same as one.
 */
const policyTypesSchema = z
  .array(z.enum(['Ingress', 'Egress']))
  .max(2, 'may not specify more than two policyTypes (Ingress and Egress)');

export const networkPolicySchema = z.strictObject({
  apiVersion: z.literal('networking.k8s.io/v1'),
  kind: z.literal('NetworkPolicy'),
  metadata: namespacedMetadata,
  spec: z.strictObject({
    // The API server defaults a missing podSelector to {} (every pod of the namespace).
    podSelector: labelSelectorSchema.optional(),
    policyTypes: policyTypesSchema.optional(),
    ingress: z.array(networkPolicyRule('from')).optional(),
    egress: z.array(networkPolicyRule('to')).optional(),
  }),
  status: z.unknown().optional(),
});

const containerPortSchema = z.looseObject({
  name: portName.optional(),
  containerPort: portNumber,
  protocol: protocolSchema.optional(),
});

export const podSchema = z.strictObject({
  apiVersion: z.literal('v1'),
  kind: z.literal('Pod'),
  metadata: namespacedMetadata,
  spec: z
    .looseObject({
      nodeName: z.string().superRefine(refineWith(dns1123SubdomainError)).optional(),
      containers: z
        .array(z.looseObject({ name: z.string().optional(), ports: z.array(containerPortSchema).optional() }))
        .optional(),
    })
    .optional(),
  status: z
    .looseObject({
      podIP: ipSchema.optional(),
      podIPs: z.array(z.strictObject({ ip: ipSchema })).optional(),
    })
    .superRefine((st, ctx) => {
      const ips = st.podIPs ?? [];
      if (st.podIP !== undefined && ips.length > 0 && ips[0]?.ip !== st.podIP)
        ctx.addIssue({
          code: 'custom',
          path: ['podIPs', 0, 'ip'],
          message: `must be the same as podIP (${st.podIP})`,
        });
      if (ips.length > 2)
        ctx.addIssue({
          code: 'custom',
          path: ['podIPs'],
          message: 'may hold at most two addresses, one per family',
        });
      if (ips.length === 2 && ips[0]?.ip.includes(':') === ips[1]?.ip.includes(':'))
        ctx.addIssue({
          code: 'custom',
          path: ['podIPs', 1, 'ip'],
          message: `${ips[1]?.ip} must be of the other family than ${ips[0]?.ip} (one address per family)`,
        });
    })
    .optional(),
});

export const namespaceSchema = z.strictObject({
  apiVersion: z.literal('v1'),
  kind: z.literal('Namespace'),
  metadata: namespaceMetadata,
  spec: z.unknown().optional(),
  status: z.unknown().optional(),
});

/** The API server's default service-node-port-range. */
export const NODE_PORT_MIN = 30000;
export const NODE_PORT_MAX = 32767;
export const SERVICE_TYPES = ['ClusterIP', 'NodePort', 'LoadBalancer'] as const;
export const MAX_AFFINITY_TIMEOUT_SECONDS = 86400;
const trafficPolicySchema = z.enum(['Cluster', 'Local']);

const servicePortSchema = z.strictObject({
  name: portName.optional(),
  port: portNumber,
  targetPort: z.union([portNumber, portName]).optional(),
  protocol: protocolSchema.optional(),
  nodePort: z
    .number()
    .int()
    .min(
      NODE_PORT_MIN,
      `provided port is not in the valid range. The range of valid ports is ${NODE_PORT_MIN}-${NODE_PORT_MAX}`,
    )
    .max(
      NODE_PORT_MAX,
      `provided port is not in the valid range. The range of valid ports is ${NODE_PORT_MIN}-${NODE_PORT_MAX}`,
    )
    .optional(),
  appProtocol: z.string().optional(),
});

const serviceSpecSchema = z
  .looseObject({
    type: z.enum(SERVICE_TYPES).optional(),
    clusterIP: z.union([ipSchema, z.literal('None')]).optional(),
    selector: labelsSchema.optional(),
    ports: z.array(servicePortSchema).min(1, 'a Service needs at least one port'),
    sessionAffinity: z.enum(['None', 'ClientIP']).optional(),
    sessionAffinityConfig: z
      .strictObject({
        clientIP: z
          .strictObject({
            timeoutSeconds: z
              .number()
              .int()
              .min(1, `must be 1-${MAX_AFFINITY_TIMEOUT_SECONDS} seconds`)
              .max(MAX_AFFINITY_TIMEOUT_SECONDS, `must be 1-${MAX_AFFINITY_TIMEOUT_SECONDS} seconds`)
              .optional(),
          })
          .optional(),
      })
      .optional(),
    externalTrafficPolicy: trafficPolicySchema.optional(),
    internalTrafficPolicy: trafficPolicySchema.optional(),
    loadBalancerIP: ipSchema.optional(),
    ipFamilies: z.array(z.enum(['IPv4', 'IPv6'])).optional(),
    ipFamilyPolicy: z.enum(['SingleStack', 'PreferDualStack', 'RequireDualStack']).optional(),
    clusterIPs: z.array(z.union([ipSchema, z.literal('None')])).optional(),
  })
  .superRefine(checkServiceSpec)
  .superRefine(checkServiceFamilies);

function familyOf(address: string): 'IPv4' | 'IPv6' {
  return address.includes(':') ? 'IPv6' : 'IPv4';
}

/** ValidateService's dual-stack rules: clusterIPs, ipFamilies and ipFamilyPolicy agree. */
function checkServiceFamilies(
  spec: {
    clusterIP?: string;
    clusterIPs?: string[];
    ipFamilies?: ('IPv4' | 'IPv6')[];
    ipFamilyPolicy?: string;
  },
  ctx: z.core.$RefinementCtx<unknown>,
): void {
  const issue = (path: (string | number)[], message: string): void =>
    ctx.addIssue({ code: 'custom', path, message });
  const ips = spec.clusterIPs ?? [];
  const families = spec.ipFamilies ?? [];
  if (spec.clusterIP !== undefined && ips.length > 0 && ips[0] !== spec.clusterIP)
    issue(['clusterIPs', 0], `must be the same as clusterIP (${spec.clusterIP})`);
  if (ips.length > 2) issue(['clusterIPs'], 'may hold at most two addresses, one per family');
  if (families.length > 2) issue(['ipFamilies'], 'may hold at most two families');
  if (ips.length === 2 && ips.includes('None')) issue(['clusterIPs'], "'None' must be the only address");
  const real = ips.filter((a) => a !== 'None');
  if (real.length === 2 && familyOf(real[0] as string) === familyOf(real[1] as string))
    issue(
      ['clusterIPs', 1],
      `${real[1]} must be of the other family than ${real[0]} (one address per family)`,
    );
  if (families.length === 2 && families[0] === families[1])
    issue(['ipFamilies', 1], `${families[1]} is listed twice (one entry per family)`);
  real.forEach((a, i) => {
    const f = families[i];
    if (f !== undefined && familyOf(a) !== f)
      issue(['clusterIPs', i], `${a} is not an ${f} address (ipFamilies[${i}] is ${f})`);
  });
  const dual = Math.max(real.length, families.length) === 2;
  if (dual && spec.ipFamilyPolicy === 'SingleStack')
    issue(
      ['ipFamilyPolicy'],
      'must be RequireDualStack or PreferDualStack when two families or addresses are given',
    );
  if (dual && spec.ipFamilyPolicy === undefined)
    issue(
      ['ipFamilyPolicy'],
      'must be RequireDualStack or PreferDualStack when two families or addresses are given',
    );
}

/** The checks ValidateService makes on fields that only some service types take. */
function checkServiceSpec(
  spec: {
    type?: (typeof SERVICE_TYPES)[number];
    clusterIP?: string;
    ports: { nodePort?: number; protocol?: string }[];
    sessionAffinity?: string;
    sessionAffinityConfig?: unknown;
    externalTrafficPolicy?: string;
    loadBalancerIP?: string;
  },
  ctx: z.core.$RefinementCtx<unknown>,
): void {
  const type = spec.type ?? 'ClusterIP';
  const external = type !== 'ClusterIP';
  const seen = new Set<string>();
  spec.ports.forEach((p, i) => {
    if (p.nodePort === undefined) return;
    if (!external)
      ctx.addIssue({
        code: 'custom',
        path: ['ports', i, 'nodePort'],
        message: "may not be used when `type` is 'ClusterIP'",
      });
    // One node port may serve a TCP and a UDP port of the service, never two of one protocol.
    const key = `${p.nodePort}/${p.protocol ?? 'TCP'}`;
    if (seen.has(key))
      ctx.addIssue({
        code: 'custom',
        path: ['ports', i, 'nodePort'],
        message: `Duplicate value: ${p.nodePort}`,
      });
    seen.add(key);
  });
  if (spec.externalTrafficPolicy !== undefined && !external)
    ctx.addIssue({
      code: 'custom',
      path: ['externalTrafficPolicy'],
      message: 'may only be set for externally-accessible services (type NodePort or LoadBalancer)',
    });
  if (spec.loadBalancerIP !== undefined && type !== 'LoadBalancer')
    ctx.addIssue({
      code: 'custom',
      path: ['loadBalancerIP'],
      message: "may only be used when `type` is 'LoadBalancer'",
    });
  if (spec.clusterIP === 'None' && external)
    ctx.addIssue({
      code: 'custom',
      path: ['clusterIP'],
      message: `may not be set to 'None' for ${type} services`,
    });
  if (spec.sessionAffinityConfig !== undefined && spec.sessionAffinity !== 'ClientIP')
    ctx.addIssue({
      code: 'custom',
      path: ['sessionAffinityConfig'],
      message: 'must not be set when session affinity is None',
    });
}

const serviceStatusSchema = z.looseObject({
  loadBalancer: z
    .looseObject({
      ingress: z
        .array(
          z.looseObject({
            ip: ipSchema.optional(),
            hostname: z.string().optional(),
            ipMode: z.enum(['VIP', 'Proxy']).optional(),
            ports: z.array(z.unknown()).optional(),
          }),
        )
        .optional(),
    })
    .optional(),
});

export const serviceSchema = z
  .strictObject({
    apiVersion: z.literal('v1'),
    kind: z.literal('Service'),
    metadata: namespacedMetadata,
    spec: serviceSpecSchema,
    status: serviceStatusSchema.optional(),
  })
  .superRefine((svc, ctx) => {
    const ingress = svc.status?.loadBalancer?.ingress ?? [];
    const type = svc.spec.type ?? 'ClusterIP';
    ingress.forEach((entry, i) => {
      const path = ['status', 'loadBalancer', 'ingress', i];
      if (type !== 'LoadBalancer')
        ctx.addIssue({
          code: 'custom',
          path,
          message: `only a LoadBalancer service has load-balancer addresses (type is ${type})`,
        });
      else if (entry.ip === undefined)
        ctx.addIssue({
          code: 'custom',
          path: [...path, 'ip'],
          message: 'an ingress entry needs ip (a hostname cannot be routed to)',
        });
    });
  });

const globalPeerSchema = z
  .strictObject({
    ...peerFields,
    nets: z.array(cidrSchema).optional(),
    notNets: z.array(cidrSchema).optional(),
  })
  .superRefine((p, ctx) => {
    checkPeerShape(p, ctx, true);
    if (Object.keys(p).length === 0)
      ctx.addIssue({
        code: 'custom',
        message: 'a peer needs podSelector, namespaceSelector, ipBlock, nets or notNets',
      });
  });

const globalRuleSchema = z
  .strictObject({
    action: z.enum(['Allow', 'Deny', 'Pass', 'Log']),
    protocol: z.enum(['TCP', 'UDP', 'SCTP', 'ICMP']).optional(),
    ports: z.array(policyPortSchema).optional(),
    from: z.array(globalPeerSchema).optional(),
    to: z.array(globalPeerSchema).optional(),
  })
  .superRefine((r, ctx) => {
    if (r.protocol === 'ICMP' && r.ports && r.ports.length > 0)
      ctx.addIssue({ code: 'custom', path: ['ports'], message: 'ports cannot be used with protocol ICMP' });
    (r.ports ?? []).forEach((p, i) => {
      if (r.protocol && p.protocol && p.protocol !== r.protocol)
        ctx.addIssue({
          code: 'custom',
          path: ['ports', i, 'protocol'],
          message: `port protocol ${p.protocol} contradicts the rule's protocol ${r.protocol}`,
        });
    });
  });

export const globalPolicySchema = z.strictObject({
  apiVersion: z.literal('switchyard.dev/v1alpha1'),
  kind: z.literal('GlobalPolicy'),
  metadata: clusterMetadata,
  spec: z
    .strictObject({
      order: z.number().finite(),
      selector: labelSelectorSchema.optional(),
      namespaceSelector: labelSelectorSchema.optional(),
      types: policyTypesSchema.optional(),
      ingress: z.array(globalRuleSchema).optional(),
      egress: z.array(globalRuleSchema).optional(),
    })
    .superRefine((s, ctx) => {
      (s.ingress ?? []).forEach((r, i) => {
        if (r.to)
          ctx.addIssue({
            code: 'custom',
            path: ['ingress', i, 'to'],
            message: 'ingress rules take from, not to',
          });
      });
      (s.egress ?? []).forEach((r, i) => {
        if (r.from)
          ctx.addIssue({
            code: 'custom',
            path: ['egress', i, 'from'],
            message: 'egress rules take to, not from',
          });
      });
    }),
});

export const prefilterSchema = z.strictObject({
  apiVersion: z.literal('switchyard.dev/v1alpha1'),
  kind: z.literal('Prefilter'),
  metadata: clusterMetadata,
  spec: z
    .strictObject({
      nodes: z.array(z.string().superRefine(refineWith(dns1123SubdomainError))).optional(),
      cidrs: z.array(cidrSchema).optional(),
      file: z.string().min(1).optional(),
    })
    .superRefine((s, ctx) => {
      if (!s.cidrs?.length && !s.file)
        ctx.addIssue({ code: 'custom', message: 'a Prefilter needs cidrs, file, or both' });
    }),
});

export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';

export const endpointSliceSchema = z
  .strictObject({
    apiVersion: z.literal('discovery.k8s.io/v1'),
    kind: z.literal('EndpointSlice'),
    metadata: namespacedMetadata,
    addressType: z.enum(['IPv4', 'IPv6']),
    ports: z
      .array(
        z.strictObject({
          name: z.string().optional(),
          port: portNumber,
          protocol: protocolSchema.optional(),
          appProtocol: z.string().optional(),
        }),
      )
      .optional(),
    endpoints: z.array(
      z.strictObject({
        addresses: z.array(ipSchema).min(1, 'an endpoint needs at least one address'),
        conditions: z
          .strictObject({
            ready: z.boolean().optional(),
            serving: z.boolean().optional(),
            terminating: z.boolean().optional(),
          })
          .optional(),
        targetRef: z
          .looseObject({
            kind: z.string().optional(),
            name: z.string().optional(),
            namespace: z.string().optional(),
          })
          .optional(),
        nodeName: z.string().optional(),
        zone: z.string().optional(),
        hostname: z.string().optional(),
      }),
    ),
  })
  .superRefine((slice, ctx) => {
    if (!slice.metadata.labels?.[SERVICE_NAME_LABEL])
      ctx.addIssue({
        code: 'custom',
        path: ['metadata', 'labels'],
        message: `an EndpointSlice needs the label ${SERVICE_NAME_LABEL} naming its Service`,
      });
    slice.endpoints.forEach((e, i) =>
      e.addresses.forEach((a, j) => {
        if (a.includes(':') !== (slice.addressType === 'IPv6'))
          ctx.addIssue({
            code: 'custom',
            path: ['endpoints', i, 'addresses', j],
            message: `${a} is not an ${slice.addressType} address (addressType)`,
          });
      }),
    );
  });

export type RawEndpointSlice = z.infer<typeof endpointSliceSchema>;
export type RawNetworkPolicy = z.infer<typeof networkPolicySchema>;
export type RawPod = z.infer<typeof podSchema>;
export type RawNamespace = z.infer<typeof namespaceSchema>;
export type RawService = z.infer<typeof serviceSchema>;
export type RawGlobalPolicy = z.infer<typeof globalPolicySchema>;
export type RawPrefilter = z.infer<typeof prefilterSchema>;

/** Accepted apiVersion/kind pairs → schema. */
export const kindSchemas = {
  'v1/Namespace': namespaceSchema,
  'v1/Pod': podSchema,
  'v1/Service': serviceSchema,
  'networking.k8s.io/v1/NetworkPolicy': networkPolicySchema,
  'discovery.k8s.io/v1/EndpointSlice': endpointSliceSchema,
  'switchyard.dev/v1alpha1/GlobalPolicy': globalPolicySchema,
  'switchyard.dev/v1alpha1/Prefilter': prefilterSchema,
} as const;

export type KindKey = keyof typeof kindSchemas;
