/** Kubernetes name and label syntax (apimachinery validation), returning a reason or undefined. */
import { excerpt } from './errors.js';

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const QUALIFIED_NAME_PART = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const IANA_SVC_NAME = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;

export function dns1123LabelError(v: string): string | undefined {
  if (v.length > 63) return `must be at most 63 characters (is ${v.length})`;
  if (!DNS1123_LABEL.test(v))
    return `'${excerpt(v)}' must be a DNS-1123 label: lower-case alphanumerics and '-'`;
  return undefined;
}

export function dns1123SubdomainError(v: string): string | undefined {
  if (v.length > 253) return `must be at most 253 characters (is ${v.length})`;
  if (!DNS1123_SUBDOMAIN.test(v))
    return `'${excerpt(v)}' must be a DNS-1123 subdomain: lower-case alphanumerics, '-' and '.'`;
  return undefined;
}

export function labelKeyError(key: string): string | undefined {
  const slash = key.lastIndexOf('/');
  const prefix = slash >= 0 ? key.slice(0, slash) : undefined;
  const name = slash >= 0 ? key.slice(slash + 1) : key;
  if (prefix !== undefined) {
    const e = dns1123SubdomainError(prefix);
    if (e) return `label key prefix ${e}`;
  }
  if (name.length === 0 || name.length > 63 || !QUALIFIED_NAME_PART.test(name))
    return `invalid label key '${excerpt(key)}': name part must be 1-63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric`;
  return undefined;
}

export function labelValueError(value: string): string | undefined {
  if (value === '') return undefined;
  if (value.length > 63 || !QUALIFIED_NAME_PART.test(value))
    return `invalid label value '${excerpt(value)}': at most 63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric`;
  return undefined;
}

/** Named ports (containerPort.name, targetPort, policy port names) are IANA service names. */
export function portNameError(v: string): string | undefined {
  if (v.length > 15) return `port name '${excerpt(v)}' must be at most 15 characters`;
  if (!IANA_SVC_NAME.test(v) || v.includes('--') || !/[a-z]/.test(v))
    return `port name '${excerpt(v)}' must be an IANA service name: lower-case alphanumerics and '-', with a letter`;
  return undefined;
}
