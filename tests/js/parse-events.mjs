// An independent reading of replkit's event encoding: the npm `eventsource-parser` package.
//
//   node parse-events.mjs
//
// Reads one base64 line per stream on stdin; writes one JSON line per stream on stdout: the
// events the parser found, [{"event", "data", "id", "retry"}] (null where absent; retry is
// the reconnection time a `retry:` line set just before that event). Each stream is decoded
// and fed in 5-byte pieces, splitting lines and UTF-8 sequences as a network would.
import readline from "node:readline";
import { createParser } from "eventsource-parser";

for await (const line of readline.createInterface({ input: process.stdin })) {
  const bytes = Buffer.from(line, "base64");
  const events = [];
  let retry = null;
  const parser = createParser({
    onEvent: (event) => {
      events.push({ event: event.event ?? null, data: event.data, id: event.id ?? null, retry });
      retry = null;
    },
    onRetry: (milliseconds) => {
      retry = milliseconds;
    },
  });
  const decoder = new TextDecoder("utf-8", { fatal: true });
  for (let i = 0; i < bytes.length; i += 5) {
    parser.feed(decoder.decode(bytes.subarray(i, i + 5), { stream: true }));
  }
  parser.feed(decoder.decode());
  process.stdout.write(`${JSON.stringify(events)}\n`);
}
