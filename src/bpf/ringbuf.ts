import type { Codec } from './codecs.js';
import { bpfError } from './errors.js';
import type { RingBufMap } from './maps.js';
import { Mapping, pageSize, Prot, watchReadable, type ReadableWatch } from './sys.js';

/** Record header flags (include/uapi/linux/bpf.h: BPF_RINGBUF_*). */
const BUSY_BIT = 0x8000_0000;
const DISCARD_BIT = 0x4000_0000;
const HEADER_SIZE = 8;

/** Receives one record: its bytes are data[offset, offset + length), valid only during the call. */
export type RecordHandler = (data: Buffer, offset: number, length: number) => void;

/**
 * Reads a BPF ring buffer from user space the way libbpf does: the consumer page is mapped
 * read-write (we publish how far we have read), the producer page and data pages read-only. The
 * kernel maps the data pages twice back to back, so a record that wraps around the end is still
 * one contiguous range.
 *
 * Waiting: the map fd polls readable when data is pending, so `start()` hands it to libuv's
 * epoll (koffi's uv_poll binding) and consumes from the event loop. That costs no thread and no
 * CPU while idle and needs no message passing for a worker thread — and records reach
 * JavaScript without a copy. The kernel only signals when the consumer has caught up, so
 * consume() always drains to the producer position before it returns.
 */
export class RingBufReader {
  private readonly consumerPage: Mapping;
  private readonly producerArea: Mapping;
  private readonly consumerPos: BigUint64Array;
  private readonly producerPos: BigUint64Array;
  private readonly data: Buffer;
  private readonly headers: Uint32Array;
  private readonly dataOffset: number;
  private readonly size: number;
  private watch: ReadableWatch | undefined;
  private closed = false;

  constructor(private readonly map: RingBufMap) {
    const page = pageSize();
    this.size = map.size;
    const consumer = Mapping.map(map.fd, page, Prot.READ | Prot.WRITE, 0);
    if (typeof consumer === 'number')
      throw bpfError(-consumer, { operation: 'mmap', subject: `${map.description} consumer page` });
    const producer = Mapping.map(map.fd, page + 2 * this.size, Prot.READ, page);
    if (typeof producer === 'number') {
      consumer.unmap();
      throw bpfError(-producer, { operation: 'mmap', subject: `${map.description} data pages` });
    }
    this.consumerPage = consumer;
    this.producerArea = producer;
    this.consumerPos = new BigUint64Array(consumer.buffer.buffer, consumer.buffer.byteOffset, 1);
    this.producerPos = new BigUint64Array(producer.buffer.buffer, producer.buffer.byteOffset, 1);
    this.dataOffset = page;
    this.data = producer.buffer;
    this.headers = new Uint32Array(producer.buffer.buffer, producer.buffer.byteOffset, producer.length / 4);
  }

  /** Bytes written by producers and not yet consumed. */
  get pending(): number {
    return Number(Atomics.load(this.producerPos, 0) - Atomics.load(this.consumerPos, 0));
  }

  /**
   * Hands every available record to `handler`, at most `limit`; returns how many it delivered.
   * Stops early at a record a producer has reserved but not yet committed.
   */
  consume(handler: RecordHandler, limit = Number.POSITIVE_INFINITY): number {
    if (this.closed) throw new Error(`${this.map.description}: reader is closed`);
    const mask = this.size - 1;
    let consumer = Number(Atomics.load(this.consumerPos, 0));
    let delivered = 0;
    for (;;) {
      const producer = Number(Atomics.load(this.producerPos, 0));
      let busy = false;
      while (consumer < producer && delivered < limit) {
        const offset = this.dataOffset + (consumer & mask);
        const header = Atomics.load(this.headers, offset / 4) as number;
        if (header & BUSY_BIT) {
          busy = true;
          break;
        }
        const length = header & ~(BUSY_BIT | DISCARD_BIT);
        if (!(header & DISCARD_BIT)) {
          handler(this.data, offset + HEADER_SIZE, length);
          delivered++;
        }
        consumer += (length + HEADER_SIZE + 7) & ~7;
      }
      Atomics.store(this.consumerPos, 0, BigInt(consumer));
      if (delivered >= limit) return delivered;
      if (busy) {
        // If the commit landed before our store, the kernel saw a stale consumer position and
        // sent no wakeup: look again. If it lands after, the wakeup comes.
        const offset = this.dataOffset + (consumer & mask);
        if ((Atomics.load(this.headers, offset / 4) as number) & BUSY_BIT) return delivered;
        continue;
      }
      // Records reserved after we read the producer position either show up now or wake us.
      if (Number(Atomics.load(this.producerPos, 0)) === consumer) return delivered;
    }
  }

  /** Decodes each record's start with `codec` (records shorter than the codec are skipped). */
  consumeDecoded<T>(codec: Codec<T>, handler: (value: T) => void, limit?: number): number {
    return this.consume((data, offset, length) => {
      if (length >= codec.size) handler(codec.decode(data, offset));
    }, limit);
  }

  /** Consumes from Node's event loop as records arrive, until stop(). */
  start(handler: RecordHandler): void {
    if (this.watch) throw new Error(`${this.map.description}: reader already started`);
    this.watch = watchReadable(this.map.fd, () => this.consume(handler));
    // Records written before start() produced their wakeup already.
    this.consume(handler);
  }

  stop(): void {
    this.watch?.close();
    this.watch = undefined;
  }

  /** Stops and unmaps; the map itself stays open (close it separately). */
  close(): void {
    if (this.closed) return;
    this.stop();
    this.producerArea.unmap();
    this.consumerPage.unmap();
    this.closed = true;
  }
}
