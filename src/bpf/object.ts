import { closeFd } from './sys.js';
import { pinFd } from './pins.js';

/** Anything the kernel hands out as a file descriptor: maps, programs, links. */
export abstract class BpfObject {
  private descriptor: number;

  protected constructor(fd: number) {
    this.descriptor = fd;
  }

  /** What error messages call this object, e.g. "map 'deny' (lpm_trie)". */
  abstract get description(): string;

  get fd(): number {
    if (this.descriptor < 0) throw new Error(`${this.description} is closed`);
    return this.descriptor;
  }

  get closed(): boolean {
    return this.descriptor < 0;
  }

  /** Pins the object at `path` on bpffs (parent directories are created) so it outlives this process. */
  pin(path: string): void {
    pinFd(this.fd, path, this.description);
  }

  /** Closes this process's reference; pinned or attached objects live on in the kernel. */
  close(): void {
    if (this.descriptor < 0) return;
    closeFd(this.descriptor);
    this.descriptor = -1;
  }
}
