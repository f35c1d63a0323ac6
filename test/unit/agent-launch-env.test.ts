import { describe, expect, it } from 'vitest';
import { agentEnv } from '../../src/agent/launch.js';

describe('agentEnv', () => {
  it('limits glibc to two malloc arenas and keeps the rest of the environment', () => {
    const env = agentEnv({ PATH: '/usr/bin', SWITCHYARD_LOG_LEVEL: 'debug' });
    expect(env).toEqual({ PATH: '/usr/bin', SWITCHYARD_LOG_LEVEL: 'debug', MALLOC_ARENA_MAX: '2' });
  });

  it("keeps the caller's own MALLOC_ARENA_MAX", () => {
    expect(agentEnv({ MALLOC_ARENA_MAX: '8' }).MALLOC_ARENA_MAX).toBe('8');
  });
});
