/** BPF_BTF_LOAD: hands a BTF blob to the kernel, returning its fd (programs keep a reference). */
import { Attr, BtfLoadAttr } from '../attr.js';
import { context, tryBpf } from '../commands.js';
import { BpfCommand } from '../constants.js';
import { bpfError } from '../errors.js';
import { cString } from '../maps.js';
import { NativeBlock } from '../sys.js';

const LOG_SIZE = 64 * 1024;

export function loadBtf(blob: Uint8Array, subject = 'program BTF'): number {
  const data = new NativeBlock(blob.byteLength);
  const attr = new Attr();
  try {
    data.buffer.set(blob);
    attr.u64(BtfLoadAttr.btf, data.address).u32(BtfLoadAttr.size, blob.byteLength);
    const fd = tryBpf(BpfCommand.BTF_LOAD, attr);
    if (fd >= 0) return fd;
    // Ask again with a log: the kernel's BTF checker says which type it rejected.
    const log = new NativeBlock(LOG_SIZE);
    try {
      attr
        .u64(BtfLoadAttr.logBuf, log.address)
        .u32(BtfLoadAttr.logSize, LOG_SIZE)
        .u32(BtfLoadAttr.logLevel, 1);
      const again = tryBpf(BpfCommand.BTF_LOAD, attr);
      if (again >= 0) return again;
      const err = bpfError(-fd, context(BpfCommand.BTF_LOAD, subject));
      const text = cString(log.buffer).trim();
      if (text) err.message += `\n${text.split('\n').slice(-8).join('\n')}`;
      throw err;
    } finally {
      log.free();
    }
  } finally {
    attr.block.free();
    data.free();
  }
}
